"""What every mail protocol's factory holds: the shared parts of the appliance it serves."""

from __future__ import annotations

from twisted.internet.protocol import ServerFactory


class MailServiceFactory(ServerFactory):
    """One listening service (``smtp``, ``imaps``...); subclasses add what differs."""

    services: tuple[str, ...] = ()

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
        if service not in self.services:
            raise ValueError(f"not a service of {type(self).__name__}: {service}")
        self.service = service
        self.reactor = reactor
        self.hostname = hostname
        self.store = store
        self.portal = portal
        #: Failed logins, counted across every protocol (throttle.py).
        self.throttle = throttle
        #: Connections, counted across the services of one protocol (monitor/limits.py).
        self.limiter = limiter
        self.settings = settings
        self.tls_context = tls_context
