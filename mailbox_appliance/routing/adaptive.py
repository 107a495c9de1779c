"""The ``adaptive`` policy: among the configured routes, the one measured fastest and most
reliable for the destination domain goes first.

Each delivery orders the routes by their expected cost (``Score.cost``: connect time plus
transfer time, inflated by the failure rate) for the message's size.  A route that fails sinks
because its failure average rises; exploration (``routing.adaptive.explore``) now and then puts
another route first, so a route that recovered, or got faster, is noticed.  A route whose
egress address is on a DNSBL is set aside while it is listed.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from zope.interface import implementer

from mailbox_appliance.interfaces import IRoutingPolicy
from mailbox_appliance.routing import Attempt, Envelope, Route, RoutingContext
from mailbox_appliance.routing.dnsbl import DNSBLWatch
from mailbox_appliance.routing.static import _all_of

log = Logger()


@implementer(IRoutingPolicy)
class AdaptivePolicy:
    def __init__(self, context: RoutingContext):
        self.context = context
        self.config = context.config.routing.adaptive
        self.scoreboard = context.scoreboard
        self.watch: DNSBLWatch | None = None
        self._all_listed = False

    def start(self) -> None:
        """Watch the DNSBLs when zones are configured, for each route with a known public
        address; forget listings nothing checks any more (say, zones removed from config)."""
        routing = self.context.config.routing
        addresses: dict[str, str] = {}
        for name in self.config.routes:
            route = routing.route(name)
            address = (route.public_address or route.source) if route else None
            if address:
                addresses[name] = address
        watched = set(addresses) if self.config.dnsbl.zones else set()
        for name in list(self.scoreboard.listed):
            if name not in watched:
                self.scoreboard.set_listed(name, None)
        if watched:
            self.watch = DNSBLWatch(
                self.context.reactor,
                self.context.resolver,
                self.scoreboard,
                addresses,
                self.config.dnsbl.zones,
                self.config.dnsbl.interval,
            )
            self.watch.start()

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    def order(self, size: int, domain: str) -> list[str]:
        """The route names to try for a message of ``size`` bytes to ``domain``, best first."""
        configured = list(self.config.routes)
        listed = self.scoreboard.listed
        candidates = [name for name in configured if name not in listed]
        if not candidates:
            # Mail must still flow: a listed route beats no route at all.
            if not self._all_listed:
                log.warn(
                    "all egress routes are listed on DNSBLs ({listings}); using them anyway",
                    listings=", ".join(f"{n} on {listed[n]}" for n in configured),
                )
            candidates = configured
        self._all_listed = candidates is configured

        def cost(name: str) -> float:
            score = self.scoreboard.score(name, domain)
            return score.cost(size) if score is not None else 0.0

        candidates.sort(key=cost)  # stable: ties keep the configured order
        if len(candidates) > 1 and self.context.random.random() < self.config.explore:
            candidates.insert(0, candidates.pop(self.context.random.randrange(1, len(candidates))))
        return candidates

    def routes(self, envelope: Envelope, domain: str) -> Deferred[list[Route]]:
        routing = self.context.config.routing
        configs = [routing.route(name) for name in self.order(envelope.size, domain)]
        # Routes whose resolution fails for now are left out; a permanent error wins.
        return ensureDeferred(_all_of(self.context, configs, domain))

    def report(self, attempt: Attempt) -> None:
        pass  # the runner records every attempt on the scoreboard, which is all we read
