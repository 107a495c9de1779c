"""Opening an outbound SMTP session to one hop of a route (RFC 5321 §5, RFC 3207).

TLS follows the route: ``none``; ``opportunistic`` (STARTTLS when offered, certificate not
checked, as MTAs do between themselves; a failed handshake is retried once in plain text,
which is what "opportunistic" means); ``required`` (no TLS, no mail; the certificate and the
hop's name are checked unless ``verify`` is off).
"""

from __future__ import annotations

import ipaddress

from twisted.internet import ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import ClientFactory

from mailbox_appliance.routing import Hop, Route
from mailbox_appliance.smtp.client import OutboundSMTP
from mailbox_appliance.smtp.client_api import SessionInfo, TLSUnavailable


async def connect_hop(
    reactor, config, route: Route, hop: Hop, helo: str
) -> tuple[OutboundSMTP, SessionInfo]:
    """A ready session (greeting, EHLO, STARTTLS and AUTH done); fails with the client's
    errors (SMTPFailure, SessionLost, TLSUnavailable) or a connection error."""
    try:
        return await _open(reactor, config, route, hop, helo, route.tls)
    except TLSUnavailable:
        if route.tls != "opportunistic":
            raise
        return await _open(reactor, config, route, hop, helo, "none")


async def _open(reactor, config, route: Route, hop: Hop, helo: str, tls: str):
    if ipaddress.ip_address(hop.address).version == 6:
        endpoint_type = TCP6ClientEndpoint
    else:
        endpoint_type = TCP4ClientEndpoint
    endpoint = endpoint_type(
        reactor,
        hop.address,
        hop.port,
        timeout=config.delivery.connect_timeout,
        bindAddress=(route.source, 0) if route.source else None,
    )
    session = OutboundSMTP(
        reactor=reactor,
        helo=helo,
        tls=tls,
        tls_options=(lambda: tls_options(route, hop)) if tls != "none" else None,
        auth=route.auth,
    )
    await endpoint.connect(_OneSession(session))
    info = await session.ready
    return session, info


class _OneSession(ClientFactory):
    """``connectProtocol`` without its two log lines per connection."""

    noisy = False

    def __init__(self, session: OutboundSMTP):
        self.session = session

    def buildProtocol(self, addr) -> OutboundSMTP:
        return self.session


def tls_options(route: Route, hop: Hop):
    """Client TLS settings for ``hop`` (SNI and, where verified, the name to check)."""
    if route.tls == "required" and route.verify:
        trust = ssl.platformTrust()
        if route.ca:
            with open(route.ca, "rb") as f:
                trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(f.read())])
        return ssl.optionsForClientTLS(hop.host, trustRoot=trust)
    return ssl.CertificateOptions(verify=False)
