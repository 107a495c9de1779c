"""The protocol factory of the two POP3 services.

``pop3`` offers STLS and refuses passwords before it, except from loopback; ``pop3s`` is
implicit TLS (RFC 8314; the appliance wraps the listener).  The factory holds the maildrop
locks: the accounts that have a POP3 session in the TRANSACTION state.
"""

from __future__ import annotations

from mailbox_appliance.pop3.server import POP3Server
from mailbox_appliance.protocols import MailServiceFactory

POP3_SERVICES = ("pop3", "pop3s")


class POP3Factory(MailServiceFactory):
    services = POP3_SERVICES

    def __init__(self, service: str, *, maildrops: set[int], **shared):
        super().__init__(service, **shared)
        self.implicit_tls = service == "pop3s"
        self.offer_stls = service == "pop3"
        #: Shared by both services: one POP3 session per maildrop (RFC 1939 §8).
        self.maildrops = maildrops

    def buildProtocol(self, addr):
        return POP3Server(self)
