"""Routing: which way each outbound message leaves (design card: the routing plug-in).

A policy (``IRoutingPolicy``) turns a destination domain into an ordered list of
:class:`Route`: each a way out (direct MX delivery or a relay, with its egress address, TLS
and AUTH), holding the next hops to try in order.  The queue runner tries them in that order
within one delivery attempt and reports every attempt back (:class:`Attempt`), so adaptive
policies learn.  Policies are plug-ins found with ``twisted.plugin``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from twisted.plugin import getPlugins

from mailbox_appliance.interfaces import IRoutingPolicy, IRoutingPolicyFactory


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    size: int
    #: The submitting account, when a user sent it.
    account_id: int | None = None


@dataclass(frozen=True)
class Hop:
    """One server to connect to."""

    #: The name it is known by: the MX or relay host name (TLS server name, Remote-MTA).
    host: str
    address: str
    port: int


@dataclass(frozen=True)
class Route:
    name: str
    hops: tuple[Hop, ...]
    #: Local address to connect from; None = the system's choice.
    source: str | None = None
    tls: str = "opportunistic"
    verify: bool = False
    ca: str | None = None
    auth: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never show the password
        hidden = dataclasses.replace(self, auth=(self.auth[0], "***") if self.auth else None)
        return f"Route({hidden.name!r}, {len(self.hops)} hops, auth={hidden.auth})"


@dataclass(frozen=True)
class Attempt:
    """What happened when the runner tried one hop of one route."""

    route: str
    domain: str
    hop: Hop
    #: The hop took the mail (a 2xx for at least one recipient, or all refused permanently).
    ok: bool
    #: Seconds from starting the connection to the session being ready (None: not reached).
    connect_seconds: float | None = None
    #: Content bytes sent and seconds from 354 to the final reply (transfer throughput).
    bytes_sent: int = 0
    data_seconds: float = 0.0
    #: The deciding reply ("250 2.0.0 Ok", "421 4.7.0 ...") or the local error.
    reply: str | None = None
    tls: bool | None = None
    when: float = 0.0


class RoutingError(Exception):
    """No route now: ``permanent`` means bounce (RFC 3463 ``status``), else retry later."""

    def __init__(self, status: str, text: str):
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


@dataclass
class RoutingContext:
    """What a policy is built with."""

    reactor: Any
    #: The whole Config; a policy reads ``config.routing`` and ``config.delivery``.
    config: Any
    #: routing.dns.Resolver: MX, address and DNSBL lookups through twisted.names.
    resolver: Any
    #: routing.scores.Scoreboard: measured connect time, throughput and failures per
    #: (route, domain), kept by the runner for every policy.
    scoreboard: Any
    #: random.Random (tests seed it).
    random: Any


def factory(name: str) -> Any | None:
    """The policy plug-in called ``name``: a built-in one without scanning for plug-ins (the
    scan imports every module under twisted/plugins), else the installed one, or None."""
    from mailbox_appliance.routing import plugins

    for builtin in (plugins.direct, plugins.smarthost, plugins.adaptive):
        if builtin.name == name:
            return builtin
    return next((f for f in getPlugins(IRoutingPolicyFactory) if f.name == name), None)


def policy_names() -> set[str]:
    """Every installed policy's name (for error messages)."""
    return {f.name for f in getPlugins(IRoutingPolicyFactory)}


def build_policy(context: RoutingContext) -> IRoutingPolicy:
    return IRoutingPolicy(factory(context.config.routing.policy).build(context))
