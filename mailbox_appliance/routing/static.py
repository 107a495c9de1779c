"""The two static policies: ``direct`` (MX lookup from this box) and ``smarthost`` (relays
per destination pattern, each with its fallbacks)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from mailbox_appliance.config_delivery import DIRECT
from mailbox_appliance.interfaces import IRoutingPolicy
from mailbox_appliance.routing import Attempt, Envelope, Route, RoutingContext, RoutingError
from mailbox_appliance.routing.routes import route_for


@implementer(IRoutingPolicy)
class DirectPolicy:
    """RFC 5321 §5.1: straight to the destination's MX hosts, by the ``direct`` route."""

    def __init__(self, context: RoutingContext):
        self.context = context

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def routes(self, envelope: Envelope, domain: str) -> Deferred[list[Route]]:
        route = self.context.config.routing.route(DIRECT)
        return ensureDeferred(_all_of(self.context, [route], domain))

    def report(self, attempt: Attempt) -> None:
        pass  # nothing to learn: the route never changes


@implementer(IRoutingPolicy)
class SmarthostPolicy(DirectPolicy):
    """``routing.smarthost``: the first rule whose pattern matches the domain names the
    routes, in order; a domain no rule matches goes direct."""

    def routes(self, envelope: Envelope, domain: str) -> Deferred[list[Route]]:
        routing = self.context.config.routing
        names: tuple[str, ...] = (DIRECT,)
        for rule in routing.smarthost:
            if fnmatchcase(domain.lower(), rule.match.lower()):
                names = rule.routes
                break
        return ensureDeferred(_all_of(self.context, [routing.route(n) for n in names], domain))


async def _all_of(context: RoutingContext, configs, domain: str) -> list[Route]:
    """Every route that resolves; the first failure when none does (a permanent one, such as
    a null MX, wins over DNS trouble)."""
    routes: list[Route] = []
    problems: list[RoutingError] = []
    for config in configs:
        try:
            routes.append(await route_for(context, config, domain))
        except RoutingError as e:
            problems.append(e)
    if not routes:
        problems.sort(key=lambda e: not e.permanent)
        raise problems[0]
    return routes
