"""The outbound sections of the configuration: ``delivery``, ``dns`` and ``routing``.

Kept apart from config.py's generic walker, which builds these classes like any other section;
the checks here look at values together (route names that must exist, ``host:port`` strings).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

#: The route every policy may name without configuring it: MX lookup from this box.
DIRECT = "direct"
TLS_MODES = ("none", "opportunistic", "required")


@dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff between attempts (seconds): first, doubling up to max_interval."""

    first: int = 60
    max_interval: int = 3600
    #: A message still not delivered this long after it was queued is bounced (5 days).
    give_up_after: int = 432000


@dataclass(frozen=True)
class DeliveryConfig:
    """The outbound queue runner."""

    #: The port of destination mail servers (MX hosts); relays name their own.
    port: int = 25
    retry: RetryConfig = field(default_factory=RetryConfig)
    #: Seconds after which the sender is told that a message is delayed; 0 = never.
    delay_notice: int = 14400
    #: Simultaneous outbound connections in total, and to one destination domain.
    max_connections: int = 100
    max_connections_per_domain: int = 10
    #: Recipients per transaction (RFC 5321 §4.5.3.1.8: servers take at least 100).
    max_recipients: int = 100
    #: Seconds to wait for a TCP connection to a next hop.
    connect_timeout: float = 30.0
    #: Seconds an idle connection waits for more mail to the same domain before QUIT.
    reuse_time: float = 5.0
    #: Seconds between looks at the queue for retries that fell due and admin changes.
    poll_interval: float = 5.0
    #: The name given in EHLO; null = ``hostname``.
    helo: str | None = None
    #: Destination domains (shell patterns) that get mail only over TLS, whatever the route
    #: says: a domain policy, like an MTA-STS "enforce" set by hand.
    tls_required_domains: tuple[str, ...] = ()
    #: Send mail that an alias forwards to another domain with an SRS sender (smtp/srs.py).
    srs: bool = True
    #: The SRS secret; null = <data_dir>/srs.key, made on first start.  Paired boxes must
    #: share one.
    srs_secret_file: str | None = None
    #: Keep outbound mail queued and send nothing (maintenance; a box not yet set up to send).
    hold: bool = False


@dataclass(frozen=True)
class DNSConfig:
    #: ``host:port`` of resolvers to ask instead of those in /etc/resolv.conf.
    nameservers: tuple[str, ...] = ()
    #: Seconds before a DNS query counts as a temporary failure.
    timeout: float = 10.0


@dataclass(frozen=True)
class RouteConfig:
    """One way out: direct MX delivery or a relay, each with its own egress address."""

    #: Required in ``routing.routes``; ``RoutingConfig.route`` makes the implicit direct route.
    name: str | None = None
    #: ``host:port`` of a relay (smarthost); null = MX lookup of the destination domain.
    relay: str | None = None
    #: Local address to send from (the egress address); null = the system's choice.
    source: str | None = None
    #: The address the world sees for this route, checked on DNSBLs; null = ``source``.
    public_address: str | None = None
    #: none | opportunistic (STARTTLS when offered) | required (no TLS, no mail).
    tls: str = "opportunistic"
    #: With ``tls: required``, check the server's certificate and name.
    verify: bool = True
    #: PEM file of certificate authorities to trust instead of the system's.
    ca: str | None = None
    #: SMTP AUTH (RFC 4954) on this route; the password is read from ``password_file``.
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class SmarthostRule:
    #: Destination domain pattern (shell style: ``*``, ``*.example.com``); first match wins.
    match: str = "*"
    #: Routes to try in order: the first is the relay, the others its fallbacks.
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DNSBLConfig:
    #: DNSBL zones to look each route's public address up in (e.g. zen.spamhaus.org).
    zones: tuple[str, ...] = ()
    #: Seconds between checks.
    interval: int = 3600


@dataclass(frozen=True)
class AdaptiveConfig:
    #: The routes to choose among, per destination domain.
    routes: tuple[str, ...] = (DIRECT,)
    #: Fraction of deliveries sent on a route other than the best, to keep scores fresh.
    explore: float = 0.05
    #: Weight of the newest measurement in each moving average (EWMA).
    smoothing: float = 0.3
    dnsbl: DNSBLConfig = field(default_factory=DNSBLConfig)


@dataclass(frozen=True)
class RoutingConfig:
    #: The routing policy plug-in: direct | smarthost | adaptive | a third-party name.
    policy: str = DIRECT
    routes: tuple[RouteConfig, ...] = ()
    smarthost: tuple[SmarthostRule, ...] = ()
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def route(self, name: str) -> RouteConfig | None:
        for route in self.routes:
            if route.name == name:
                return route
        return RouteConfig(name=DIRECT) if name == DIRECT else None


def host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) split; ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or host.count(":") and not (host.startswith("[") and host.endswith("]")):
        if default_port is None:
            raise ValueError(f"expected host:port, got {value!r}")
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


def check_delivery(delivery: DeliveryConfig, errors: list[str]) -> None:
    if not 0 < delivery.port < 65536:
        errors.append(f"delivery.port: expected a port number, got {delivery.port}")
    positive = ("max_connections", "max_connections_per_domain", "max_recipients")
    for name in (*positive, "connect_timeout", "reuse_time", "poll_interval"):
        if getattr(delivery, name) <= 0:
            errors.append(f"delivery.{name}: expected more than 0")
    retry = delivery.retry
    if retry.first < 1:
        errors.append("delivery.retry.first: expected at least 1 second")
    if retry.max_interval < retry.first:
        errors.append("delivery.retry.max_interval: expected at least retry.first")


def check_dns(dns: DNSConfig, errors: list[str]) -> None:
    for i, server in enumerate(dns.nameservers):
        try:
            host, _ = host_port(server, 53)
            ipaddress.ip_address(host)
        except ValueError as e:
            errors.append(f"dns.nameservers[{i}]: {e} (an IP address, optionally :port)")
    if dns.timeout <= 0:
        errors.append("dns.timeout: expected more than 0")


def check_routing(routing: RoutingConfig, errors: list[str]) -> None:
    names: set[str] = set()
    for i, route in enumerate(routing.routes):
        key = f"routing.routes[{i}]"
        if route.name is None:
            errors.append(f"{key}.name: every route needs a name")
        elif route.name in names:
            errors.append(f"{key}.name: {route.name!r} is defined twice")
        names.add(route.name)
        if route.relay is not None:
            try:
                host_port(route.relay)
            except ValueError as e:
                errors.append(f"{key}.relay: {e}")
        for attr in ("source", "public_address"):
            value = getattr(route, attr)
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    errors.append(f"{key}.{attr}: expected an IP address, got {value!r}")
        if route.tls not in TLS_MODES:
            errors.append(f"{key}.tls: expected one of {', '.join(TLS_MODES)}, got {route.tls!r}")
        if (route.username is None) != (route.password_file is None):
            errors.append(f"{key}: give both username and password_file, or neither")
        elif route.password_file is not None:
            try:
                with open(route.password_file, encoding="utf-8"):
                    pass
            except OSError as e:
                errors.append(f"{key}.password_file: cannot read it: {e.strerror}")
        if route.username is not None and route.tls == "none":
            errors.append(f"{key}.tls: AUTH sends a password, so it needs TLS")
    known = names | {DIRECT}
    for i, rule in enumerate(routing.smarthost):
        if not rule.routes:
            errors.append(f"routing.smarthost[{i}].routes: name at least one route")
        for name in rule.routes:
            if name not in known:
                errors.append(f"routing.smarthost[{i}].routes: no route named {name!r}")
    if routing.policy == "smarthost" and not routing.smarthost:
        errors.append("routing.smarthost: the smarthost policy needs at least one rule")
    adaptive = routing.adaptive
    for name in adaptive.routes:
        if name not in known:
            errors.append(f"routing.adaptive.routes: no route named {name!r}")
    if not adaptive.routes:
        errors.append("routing.adaptive.routes: name at least one route")
    if not 0 <= adaptive.explore < 1:
        errors.append("routing.adaptive.explore: expected a fraction from 0 to below 1")
    if not 0 < adaptive.smoothing <= 1:
        errors.append("routing.adaptive.smoothing: expected a fraction above 0, at most 1")
    if adaptive.dnsbl.interval < 1:
        errors.append("routing.adaptive.dnsbl.interval: expected at least 1 second")
    from mailbox_appliance.routing import factory, policy_names

    if factory(routing.policy) is None:
        errors.append(
            f"routing.policy: unknown policy {routing.policy!r} "
            f"(installed: {', '.join(sorted(policy_names()))})"
        )
