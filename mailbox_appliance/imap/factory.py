"""The protocol factory of the two IMAP services.

``imap`` offers STARTTLS and refuses passwords before it (LOGINDISABLED), except from
loopback; ``imaps`` is implicit TLS (RFC 8314; the appliance wraps the listener).
"""

from __future__ import annotations

from mailbox_appliance.imap.server import IMAPServer
from mailbox_appliance.protocols import MailServiceFactory

IMAP_SERVICES = ("imap", "imaps")


class IMAPFactory(MailServiceFactory):
    services = IMAP_SERVICES

    def __init__(self, service: str, **shared):
        super().__init__(service, **shared)
        self.implicit_tls = service == "imaps"
        self.offer_starttls = service == "imap"

    def buildProtocol(self, addr):
        return IMAPServer(self)
