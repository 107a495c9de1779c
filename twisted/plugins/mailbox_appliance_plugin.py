"""twistd plugin: ``twistd -n mailbox-appliance [--config PATH]``."""

from twisted.application.service import ServiceMaker

mailboxAppliance = ServiceMaker(
    "mailbox-appliance",
    "mailbox_appliance.tap",
    "A complete mail system: SMTP, IMAP4, POP3, file transfer.",
    "mailbox-appliance",
)
