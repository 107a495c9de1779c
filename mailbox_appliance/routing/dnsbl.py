"""DNSBL checks of each route's egress address: a listed address gets mail refused or
filtered as spam, so adaptive routing sets the route aside until it is delisted.

RFC 5782 §2.1/§2.4: the query is the address reversed (IPv4 octets; IPv6 nibbles) under the
list's zone; an A record in 127.0.0.0/8 means listed, no such name means not listed.  Lists
answer 127.255.255.0/24 for their own errors (Spamhaus: "query refused" through a public
resolver), which says nothing about the address.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailbox_appliance.routing.scores import Scoreboard

log = Logger()

_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")


class Answer(enum.Enum):
    LISTED = "listed"
    CLEAN = "clean"
    #: A DNS failure, a list error code or a nonsense answer: the state stays as it was.
    UNKNOWN = "unknown"


def query_name(address: str, zone: str) -> str:
    """``1.2.0.192.zone`` for 192.0.2.1; 32 reversed nibbles for IPv6 (RFC 5782 §2.4)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        labels = reversed(str(ip).split("."))
    else:
        labels = reversed(ip.exploded.replace(":", ""))
    return ".".join([*labels, zone.strip(".")])


class DNSBLWatch:
    """Checks every route's address on every zone now and every ``interval`` seconds."""

    def __init__(
        self,
        reactor,
        resolver,
        scoreboard: Scoreboard,
        routes: dict[str, str],
        zones: Sequence[str],
        interval: float,
    ):
        self.reactor = reactor
        self.resolver = resolver
        self.scoreboard = scoreboard
        #: Route name -> the public (egress) address to check.
        self.routes = dict(routes)
        self.zones = tuple(zones)
        self.interval = interval
        self._loop = LoopingCall(self._iteration)
        self._loop.clock = reactor

    def start(self) -> None:
        if not self._loop.running:
            done = self._loop.start(self.interval, now=True)
            done.addErrback(lambda f: log.failure("the DNSBL watch stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _iteration(self) -> Deferred[None]:
        # A LoopingCall stops forever after one uncaught error: log it and keep checking.
        def failed(failure: Failure) -> None:
            log.failure("DNSBL check failed; will check again", failure)

        return ensureDeferred(self.check()).addErrback(failed)

    async def check(self) -> None:
        """Look every route up on every zone at once, then update the scoreboard."""
        pairs = [(route, zone) for route in self.routes for zone in self.zones]
        answers = await gatherResults(
            [ensureDeferred(self._ask(route, zone)) for route, zone in pairs],
            consumeErrors=True,
        )
        results: dict[str, dict[str, Answer]] = {route: {} for route in self.routes}
        for (route, zone), answer in zip(pairs, answers, strict=True):
            results[route][zone] = answer
        for route, by_zone in results.items():
            self._update(route, by_zone)

    def _update(self, route: str, by_zone: dict[str, Answer]) -> None:
        address = self.routes[route]
        current = self.scoreboard.listed.get(route)
        listed_on = [zone for zone, answer in by_zone.items() if answer is Answer.LISTED]
        if current in listed_on:
            new: str | None = current
        elif listed_on:
            new = listed_on[0]
        elif current is not None and by_zone.get(current) is Answer.UNKNOWN:
            new = current  # no word from the zone it is listed on
        elif current is None and any(a is Answer.UNKNOWN for a in by_zone.values()):
            return  # nothing learned; not even a check worth recording
        else:
            new = None
        if not self.scoreboard.set_listed(route, new):
            return
        if new is not None:
            log.warn(
                "route {route}: egress address {address} is listed on {zone}; "
                "set aside until delisted",
                route=route,
                address=address,
                zone=new,
            )
        else:
            log.info(
                "route {route}: egress address {address} is no longer listed on {zone}; "
                "back in use",
                route=route,
                address=address,
                zone=current,
            )

    async def _ask(self, route: str, zone: str) -> Answer:
        address = self.routes[route]
        name = query_name(address, zone)
        try:
            records = await self.resolver.lookup_a(name)
        except Exception as e:
            log.warn(
                "DNSBL query {name} for route {route} failed ({error}); its state stays",
                name=name,
                route=route,
                error=e,
            )
            return Answer.UNKNOWN
        if not records:
            return Answer.CLEAN  # NXDOMAIN
        try:
            codes = [ipaddress.ip_address(r) for r in records]
        except ValueError:
            codes = []
        if any(c in _LISTED and c not in _ERROR_CODES for c in codes):
            return Answer.LISTED
        if any(c in _ERROR_CODES for c in codes):
            why = "the list answered with an error code (e.g. query refused)"
        else:
            why = "the answer is not a DNSBL code (a resolver rewriting NXDOMAIN?)"
        log.warn(
            "DNSBL {zone} gave {codes} for route {route} ({address}): {why}; its state stays",
            zone=zone,
            codes=", ".join(records),
            route=route,
            address=address,
            why=why,
        )
        return Answer.UNKNOWN
