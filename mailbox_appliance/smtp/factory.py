"""The protocol factory of the three SMTP services and what differs between them.

``smtp`` is the MX: STARTTLS offered, AUTH never, mail only for local recipients.
``submission`` (RFC 6409) offers STARTTLS and requires AUTH, which it offers only under TLS.
``submissions`` (RFC 8314) is submission with implicit TLS (the appliance wraps the listener).
"""

from __future__ import annotations

from mailbox_appliance.protocols import MailServiceFactory
from mailbox_appliance.smtp.server import SMTPServer

SMTP_SERVICES = ("smtp", "submission", "submissions")


class SMTPFactory(MailServiceFactory):
    services = SMTP_SERVICES

    def __init__(self, service: str, srs=None, detacher=None, **shared):
        super().__init__(service, **shared)
        #: smtp/srs.SRS for forwarded mail and the bounces that come back; None = off.
        self.srs = srs
        #: smtp/detach.Detacher: large attachments of submitted mail become links; None = off.
        self.detacher = detacher
        self.submission = service != "smtp"
        self.implicit_tls = service == "submissions"
        self.offer_starttls = service != "submissions"
        settings = self.settings
        self.max_size = (
            settings.submission_max_message_size if self.submission else settings.max_message_size
        )

    def buildProtocol(self, addr):
        return SMTPServer(self)
