"""Configured routes (``routing.routes``) made concrete for one destination domain."""

from __future__ import annotations

from fnmatch import fnmatchcase

from mailbox_appliance.config_delivery import RouteConfig, host_port
from mailbox_appliance.routing import Route, RoutingContext, RoutingError


async def route_for(context: RoutingContext, config: RouteConfig, domain: str) -> Route:
    """The route ``config`` to ``domain``: its hops are the domain's MX hosts (direct) or the
    relay's addresses, each address a hop; fails with RoutingError."""
    if config.relay is None:
        hops = await context.resolver.next_hops(domain, context.config.delivery.port)
    else:
        host, port = host_port(config.relay)
        hops = await context.resolver.relay_hops(host, port)
    tls = config.tls
    required = context.config.delivery.tls_required_domains
    if any(fnmatchcase(domain.lower(), pattern.lower()) for pattern in required):
        tls = "required"  # the domain's policy: a route may not send it in plain text
    auth = None
    if config.username is not None and config.password_file is not None:
        auth = (config.username, _read_password(config.password_file))
    return Route(
        name=config.name,
        hops=tuple(hops),
        source=config.source,
        tls=tls,
        verify=config.verify,
        ca=config.ca,
        auth=auth,
    )


def _read_password(path: str) -> str:
    """Read at each use, so a changed password needs no restart; the file is small."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip("\r\n")
    except OSError as e:  # the mail waits for the admin to put it back
        raise RoutingError("4.3.5", f"cannot read the password file {path}: {e.strerror}") from e
