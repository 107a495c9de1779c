"""The protocol factory of the three SMTP services and what differs between them.

``smtp`` is the MX: STARTTLS offered, AUTH never, mail only for local recipients.
``submission`` (RFC 6409) offers STARTTLS and requires AUTH, which it offers only under TLS.
``submissions`` (RFC 8314) is submission with implicit TLS (the appliance wraps the listener).
"""

from __future__ import annotations

from twisted.internet.protocol import ServerFactory

from mailbox_appliance.smtp.server import SMTPServer

SMTP_SERVICES = ("smtp", "submission", "submissions")


class SMTPFactory(ServerFactory):
    def __init__(
        self,
        service: str,
        *,
        reactor,
        hostname: str,
        store,
        portal,
        throttle,
        limiter,
        settings,
        tls_context,
    ):
        if service not in SMTP_SERVICES:
            raise ValueError(f"not an SMTP service: {service}")
        self.service = service
        self.reactor = reactor
        self.hostname = hostname
        self.store = store
        self.portal = portal
        self.throttle = throttle
        self.limiter = limiter
        self.settings = settings
        self.tls_context = tls_context
        self.submission = service != "smtp"
        self.implicit_tls = service == "submissions"
        self.offer_starttls = service != "submissions"
        self.max_size = (
            settings.submission_max_message_size if self.submission else settings.max_message_size
        )

    def buildProtocol(self, addr):
        return SMTPServer(self)
