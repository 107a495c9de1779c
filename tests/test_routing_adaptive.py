"""Adaptive routing: the scoreboard's averages, the policy's ordering and how it learns, and the
DNSBL watch that sets listed egress addresses aside; all on a fake clock and fake DNS."""

from __future__ import annotations

import random

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailbox_appliance.config import parse_config
from mailbox_appliance.interfaces import IRoutingPolicy
from mailbox_appliance.routing import (
    Attempt,
    Envelope,
    Hop,
    RoutingContext,
    RoutingError,
    build_policy,
)
from mailbox_appliance.routing.adaptive import AdaptivePolicy
from mailbox_appliance.routing.dnsbl import DNSBLWatch, query_name
from mailbox_appliance.routing.scores import Score, Scoreboard, format_table

DOMAIN = "example.org"
HOP = Hop("relay", "127.0.0.10", 2525)
ZONE = "zen.dnsbl.test"

RELAYS = [
    {"name": "relay-a", "relay": "relay-a.test:2525", "source": "127.0.0.10"},
    {"name": "relay-b", "relay": "relay-b.test:2525", "source": "127.0.0.11"},
    {"name": "relay-c", "relay": "relay-c.test:2525", "public_address": "2001:db8::c"},
]


class FakeResolver:
    """Canned answers: relays resolve to themselves unless ``relays`` says otherwise."""

    def __init__(self):
        self.relays: dict[str, Exception] = {}
        self.mx: list[Hop] | Exception = [Hop("mx.example.org", "192.0.2.25", 25)]
        self.a: dict[str, list[str] | Exception] = {}
        self.queries: list[str] = []

    async def next_hops(self, domain: str, port: int) -> list[Hop]:
        if isinstance(self.mx, Exception):
            raise self.mx
        return self.mx

    async def relay_hops(self, host: str, port: int) -> list[Hop]:
        if host in self.relays:
            raise self.relays[host]
        return [Hop(host, "127.0.0.10", port)]

    def lookup_a(self, name: str):
        self.queries.append(name)
        answer = self.a.get(name, [])
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


def attempt(route: str = "relay-a", ok: bool = True, **kw) -> Attempt:
    return Attempt(route=route, domain=DOMAIN, hop=HOP, ok=ok, **kw)


def messages(events, level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


class ScoreboardTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.board = Scoreboard(self.clock, smoothing=0.5)

    def test_first_sample_sets_the_averages(self):
        score = self.board.record(
            attempt(connect_seconds=0.2, bytes_sent=1000, data_seconds=0.5, reply="250 Ok")
        )
        self.assertEqual(
            (score.samples, score.connect, score.throughput, score.failure),
            (1, 0.2, 2000.0, 0.0),
        )
        self.assertEqual(score.last_reply, "250 Ok")
        self.assertTrue(self.board.dirty)

    def test_later_samples_move_by_the_smoothing_weight(self):
        self.board.record(attempt(connect_seconds=1.0, bytes_sent=1000, data_seconds=1.0))
        score = self.board.record(attempt(connect_seconds=3.0, bytes_sent=3000, data_seconds=1.0))
        self.assertEqual((score.samples, score.connect, score.throughput), (2, 2.0, 2000.0))

    def test_failure_average_rises_with_failures_and_falls_with_successes(self):
        self.board.record(attempt(ok=True))
        self.assertEqual(self.board.record(attempt(ok=False)).failure, 0.5)
        self.assertEqual(self.board.record(attempt(ok=False)).failure, 0.75)
        self.assertEqual(self.board.record(attempt(ok=True)).failure, 0.375)

    def test_a_first_failure_counts_in_full(self):
        self.assertEqual(self.board.record(attempt(ok=False)).failure, 1.0)

    def test_throughput_comes_only_from_data_transfers(self):
        score = self.board.record(attempt(ok=False, connect_seconds=0.1, reply="421 busy"))
        self.assertIsNone(score.throughput)
        self.board.record(attempt(bytes_sent=500, data_seconds=0.0))
        self.assertIsNone(score.throughput)
        self.assertEqual(score.connect, 0.1)

    def test_times_come_from_the_attempt_or_else_the_clock(self):
        self.board.record(attempt(ok=True, when=500.0))
        score = self.board.record(attempt(ok=False))
        self.assertEqual((score.last_ok, score.last_failure), (500.0, 1000.0))

    def test_scores_are_per_route_and_domain(self):
        self.board.record(attempt("relay-a"))
        self.board.record(Attempt("relay-a", "Other.example", HOP, ok=False))
        self.assertEqual(self.board.score("relay-a", DOMAIN).failure, 0.0)
        self.assertEqual(self.board.score("relay-a", "other.EXAMPLE").failure, 1.0)
        self.assertIsNone(self.board.score("relay-b", DOMAIN))
        self.assertEqual(len(self.board.scores()), 2)

    def test_an_unknown_route_costs_nothing_so_it_gets_tried(self):
        self.assertEqual(Score("relay-a", DOMAIN).cost(10**6), 0.0)

    def test_cost_is_connect_plus_transfer_inflated_by_failure(self):
        score = Score("relay-a", DOMAIN, samples=3, connect=0.5, throughput=1000.0)
        self.assertEqual(score.cost(1500), 2.0)
        score.failure = 0.5
        self.assertEqual(score.cost(1500), 4.0)
        score.failure = 1.0
        self.assertEqual(score.cost(1500), 40.0)  # capped at 20 times

    def test_a_route_that_never_connected_is_assumed_slow_not_free(self):
        score = Score("relay-a", DOMAIN, samples=1, failure=1.0)
        self.assertGreater(score.cost(1000), Score("b", DOMAIN, 5, 1.0, 1e5).cost(1000))

    def test_set_listed_says_when_the_state_changed(self):
        self.assertTrue(self.board.set_listed("relay-a", ZONE))
        self.assertEqual(self.board.listed, {"relay-a": ZONE})
        self.board.dirty = False
        self.assertFalse(self.board.set_listed("relay-a", ZONE))
        self.assertFalse(self.board.dirty)
        self.assertTrue(self.board.set_listed("relay-a", None))
        self.assertTrue(self.board.dirty)
        self.assertEqual(self.board.listed, {})

    def test_rows_round_trip_through_load(self):
        self.board.record(attempt(connect_seconds=0.2, bytes_sent=10, data_seconds=1, reply="250"))
        self.board.record(attempt("relay-b", ok=False, reply="421 no"))
        self.board.set_listed("relay-b", ZONE)
        self.board.set_listed("relay-a", None)
        rows = self.board.rows()
        self.assertIn({"route": "relay-b", "domain": "", "state": {"listed": ZONE}}, rows)
        self.assertIn({"route": "relay-a", "domain": "", "state": {"listed": None}}, rows)

        other = Scoreboard(self.clock)
        other.dirty = True
        other.load(rows)
        self.assertFalse(other.dirty)
        self.assertEqual(other.rows(), rows)
        self.assertEqual(other.scores(), self.board.scores())
        self.assertEqual(other.listed, {"relay-b": ZONE})

    def test_load_skips_malformed_rows(self):
        with capturedLogs() as events:
            self.board.load(
                [
                    {"route": "relay-a"},
                    {"route": "relay-a", "domain": DOMAIN, "state": {"samples": 2, "new": 1}},
                ]
            )
        self.assertEqual(self.board.score("relay-a", DOMAIN).samples, 2)
        self.assertEqual(len(messages(events, LogLevel.warn)), 1)


class FormatTableTests(SynchronousTestCase):
    def test_the_table_shows_every_route_and_its_state(self):
        board = Scoreboard(Clock())
        board.record(
            attempt(
                connect_seconds=0.25,
                bytes_sent=3_000_000,
                data_seconds=1.0,
                reply="250 2.0.0 Ok",
                when=100.0,
            )
        )
        for _ in range(3):
            board.record(attempt("relay-b", ok=False, reply="421 4.3.2 busy", when=200.0))
        board.set_listed("relay-c", ZONE)
        table = format_table(board.rows(), now=260.0)
        lines = table.splitlines()
        self.assertIn("ROUTE", lines[0])
        self.assertIn("LAST REPLY", lines[0])
        self.assertIn(f"listed on {ZONE}", lines[1])  # listed routes come first
        self.assertIn("relay-c", lines[1])
        a = next(line for line in lines if line.startswith("relay-a"))
        self.assertIn(" ok ", a)
        self.assertIn("250 ms", a)
        self.assertIn("3.0 MB/s", a)
        self.assertIn("0%", a)
        self.assertIn("250 2.0.0 Ok", a)
        self.assertIn("3m ago", a)
        b = next(line for line in lines if line.startswith("relay-b"))
        self.assertIn("failing", b)
        self.assertIn("100%", b)
        self.assertIn("1m ago", b)

    def test_an_empty_board_says_so(self):
        self.assertIn("nothing measured yet", format_table([], now=0.0))


class PolicyTestCase(SynchronousTestCase):
    def make_policy(self, explore: float = 0.05, seed: int = 1, **adaptive) -> AdaptivePolicy:
        names = adaptive.pop("routes", [r["name"] for r in RELAYS])
        self.config = parse_config(
            {
                "routing": {
                    "policy": "adaptive",
                    "routes": RELAYS,
                    "adaptive": {"routes": names, "explore": explore, **adaptive},
                }
            }
        )
        self.clock = Clock()
        self.resolver = FakeResolver()
        self.board = Scoreboard(self.clock, self.config.routing.adaptive.smoothing)
        self.noise = random.Random(seed + 1000)
        self.context = RoutingContext(
            self.clock, self.config, self.resolver, self.board, random.Random(seed)
        )
        self.policy = build_policy(self.context)
        self.addCleanup(self.policy.stop)
        return self.policy

    def order(self, size: int = 100_000) -> list[str]:
        routes = self.successResultOf(
            self.policy.routes(Envelope("a@b.test", ("x@y",), size), DOMAIN)
        )
        return [route.name for route in routes]

    def teach(self, route: str, connect: float, throughput: float, times: int = 3) -> None:
        for _ in range(times):
            self.board.record(
                attempt(
                    route, connect_seconds=connect, bytes_sent=1000, data_seconds=1000 / throughput
                )
            )

    def deliver(self, model: dict[str, tuple[float, float, float]], size: int) -> list[str]:
        """What the runner does: try routes in order until one takes the mail, recording and
        reporting every attempt; ``model`` gives each route's true connect time, throughput
        and failure rate.  Returns the routes tried."""
        tried = []
        for route in self.successResultOf(
            self.policy.routes(Envelope("a@b.test", ("x@y",), size), DOMAIN)
        ):
            for hop in route.hops:
                connect, throughput, failure = model[route.name]
                self.clock.advance(10)
                jitter = self.noise.uniform(0.8, 1.2)
                if self.noise.random() < failure:
                    result = Attempt(
                        route.name,
                        DOMAIN,
                        hop,
                        ok=False,
                        reply="connection refused",
                        when=self.clock.seconds(),
                    )
                else:
                    result = Attempt(
                        route.name,
                        DOMAIN,
                        hop,
                        ok=True,
                        connect_seconds=connect * jitter,
                        bytes_sent=size,
                        data_seconds=size / throughput * jitter,
                        reply="250 2.0.0 Ok",
                        when=self.clock.seconds(),
                    )
                tried.append(route.name)
                self.board.record(result)
                self.policy.report(result)
                if result.ok:
                    return tried
        return tried

    def size(self) -> int:
        return self.noise.randrange(5_000, 3_000_000)


class OrderingTests(PolicyTestCase):
    def test_the_adaptive_plugin_builds_an_IRoutingPolicy(self):
        policy = self.make_policy()
        self.assertIsInstance(policy, AdaptivePolicy)
        self.assertTrue(verifyObject(IRoutingPolicy, policy))

    def test_unmeasured_routes_keep_the_configured_order(self):
        self.make_policy(explore=0)
        self.assertEqual(self.order(), ["relay-a", "relay-b", "relay-c"])

    def test_routes_resolve_to_their_hops_and_settings(self):
        self.make_policy(explore=0)
        routes = self.successResultOf(self.policy.routes(Envelope("a@b", ("c@d",), 10), DOMAIN))
        self.assertEqual(routes[0].hops, (Hop("relay-a.test", "127.0.0.10", 2525),))
        self.assertEqual(routes[1].source, "127.0.0.11")

    def test_the_cheapest_route_for_the_message_size_goes_first(self):
        self.make_policy(explore=0)
        self.teach("relay-a", connect=0.05, throughput=100_000)  # quick to reach, slow pipe
        self.teach("relay-b", connect=1.0, throughput=10_000_000)  # slow to reach, fat pipe
        self.teach("relay-c", connect=2.0, throughput=1_000_000)
        self.assertEqual(self.order(size=1000), ["relay-a", "relay-b", "relay-c"])
        self.assertEqual(self.order(size=10_000_000), ["relay-b", "relay-c", "relay-a"])

    def test_an_unmeasured_route_is_tried_before_measured_ones(self):
        self.make_policy(explore=0)
        self.teach("relay-a", connect=0.05, throughput=1e6)
        self.teach("relay-c", connect=0.05, throughput=1e6)
        self.assertEqual(self.order()[0], "relay-b")

    def test_exploration_puts_another_route_first_now_and_then(self):
        self.make_policy(explore=0.2)
        self.teach("relay-a", connect=0.05, throughput=1e6)
        self.teach("relay-b", connect=0.5, throughput=1e6)
        self.teach("relay-c", connect=1.0, throughput=1e6)
        firsts = [self.order()[0] for _ in range(500)]
        explored = 500 - firsts.count("relay-a")
        self.assertTrue(60 < explored < 140, explored)
        self.assertGreater(firsts.count("relay-b"), 20)
        self.assertGreater(firsts.count("relay-c"), 20)

    def test_an_explored_route_keeps_the_best_next(self):
        self.make_policy(explore=0.5)
        self.teach("relay-a", connect=0.05, throughput=1e6)
        self.teach("relay-b", connect=0.5, throughput=1e6)
        self.teach("relay-c", connect=1.0, throughput=1e6)
        orders = {tuple(self.order()) for _ in range(50)}
        self.assertEqual(
            orders,
            {
                ("relay-a", "relay-b", "relay-c"),
                ("relay-b", "relay-a", "relay-c"),
                ("relay-c", "relay-a", "relay-b"),
            },
        )


class ListingTests(PolicyTestCase):
    def test_listed_routes_are_set_aside(self):
        self.make_policy(explore=0.5)
        self.board.set_listed("relay-a", ZONE)
        for _ in range(30):
            self.assertEqual(sorted(self.order()), ["relay-b", "relay-c"])

    def test_when_every_route_is_listed_they_are_used_anyway_and_that_is_logged_once(self):
        self.make_policy(explore=0)
        for name in ("relay-a", "relay-b", "relay-c"):
            self.board.set_listed(name, ZONE)
        with capturedLogs() as events:
            self.assertEqual(self.order(), ["relay-a", "relay-b", "relay-c"])
            self.order()
        [warning] = messages(events, LogLevel.warn)
        self.assertIn("all egress routes are listed", warning)
        self.assertIn(f"relay-b on {ZONE}", warning)
        # Delisted: back to normal, and a later "all listed" is logged again.
        self.board.set_listed("relay-b", None)
        self.assertEqual(self.order(), ["relay-b"])
        self.board.set_listed("relay-b", ZONE)
        with capturedLogs() as events:
            self.order()
        self.assertEqual(len(messages(events, LogLevel.warn)), 1)

    def test_start_forgets_listings_no_dnsbl_checks_any_more(self):
        self.make_policy()  # no zones configured
        self.board.load([{"route": "relay-a", "domain": "", "state": {"listed": ZONE}}])
        self.policy.start()
        self.assertIsNone(self.policy.watch)
        self.assertEqual(self.board.listed, {})

    def test_start_watches_each_route_public_address_on_every_zone(self):
        self.make_policy(dnsbl={"zones": [ZONE, "bl.test"], "interval": 600})
        self.resolver.a[query_name("127.0.0.11", "bl.test")] = ["127.0.0.2"]
        self.policy.start()
        self.assertEqual(len(self.resolver.queries), 6)
        self.assertIn(query_name("2001:db8::c", ZONE), self.resolver.queries)  # public_address
        self.assertEqual(self.board.listed, {"relay-b": "bl.test"})
        self.assertEqual(sorted(self.order()), ["relay-a", "relay-c"])
        self.clock.advance(600)
        self.assertEqual(len(self.resolver.queries), 12)
        self.policy.stop()
        self.clock.advance(600)
        self.assertEqual(len(self.resolver.queries), 12)

    def test_the_direct_route_without_a_source_is_not_checked(self):
        self.make_policy(routes=["direct", "relay-a"], dnsbl={"zones": [ZONE]})
        self.policy.start()
        self.assertEqual(self.resolver.queries, [query_name("127.0.0.10", ZONE)])


class ResolutionTests(PolicyTestCase):
    def test_a_route_that_fails_to_resolve_for_now_is_left_out(self):
        self.make_policy(explore=0)
        self.resolver.relays["relay-b.test"] = RoutingError("4.4.3", "DNS A lookup failed")
        self.assertEqual(self.order(), ["relay-a", "relay-c"])

    def test_when_no_route_resolves_a_permanent_error_wins(self):
        self.make_policy(explore=0, routes=["relay-a", "direct"])
        self.resolver.relays["relay-a.test"] = RoutingError("4.4.3", "DNS A lookup failed")
        self.resolver.mx = RoutingError("5.1.10", "the domain accepts no mail (null MX)")
        d = self.policy.routes(Envelope("a@b", ("c@d",), 10), DOMAIN)
        self.assertEqual(self.failureResultOf(d, RoutingError).value.status, "5.1.10")

    def test_when_no_route_resolves_for_now_the_error_is_temporary(self):
        self.make_policy(explore=0, routes=["relay-a", "relay-b"])
        for host in ("relay-a.test", "relay-b.test"):
            self.resolver.relays[host] = RoutingError("4.4.3", f"{host} has no address")
        d = self.policy.routes(Envelope("a@b", ("c@d",), 10), DOMAIN)
        self.assertFalse(self.failureResultOf(d, RoutingError).value.permanent)


# True connect seconds, throughput (bytes/s) and failure rate of each route.
MODEL = {
    "relay-a": (0.08, 2_000_000.0, 0.02),  # the best for every size
    "relay-b": (0.30, 400_000.0, 0.05),
    "relay-c": (0.20, 1_000_000.0, 0.35),
}


class LearningTests(PolicyTestCase):
    def test_the_policy_converges_on_the_best_route_and_keeps_exploring(self):
        self.make_policy(explore=0.05, seed=7)
        firsts = [self.deliver(MODEL, self.size())[0] for _ in range(200)]
        self.assertEqual(firsts[:3], ["relay-a", "relay-b", "relay-c"])  # each tried once
        self.assertGreater(firsts[100:].count("relay-a"), 85)
        # Long after every route was measured, the others are still put first now and then.
        for name in ("relay-b", "relay-c"):
            self.assertGreater(firsts[20:].count(name), 0, name)

    def test_a_failing_route_sinks_within_a_few_deliveries_and_returns_when_it_recovers(self):
        self.make_policy(explore=0.1, seed=3)
        model = {"relay-a": (0.1, 1e6, 0.0), "relay-b": (0.2, 5e5, 0.0), "relay-c": (1, 1e5, 0)}
        for _ in range(30):
            self.deliver(model, 1_000_000)
        self.assertEqual(self.order(size=1_000_000)[0], "relay-a")

        model["relay-a"] = (0.1, 1e6, 1.0)  # relay-a goes down
        firsts = [self.deliver(model, 1_000_000)[0] for _ in range(40)]
        # Every delivery still got through on the same attempt (the runner moves on) ...
        self.assertEqual(self.board.score("relay-b", DOMAIN).failure, 0.0)
        # ... and after a few, relay-b leads, relay-a tried only when explored.
        switched = firsts.index("relay-b")
        self.assertLessEqual(switched, 3)
        self.assertGreater(firsts[switched:].count("relay-b"), 0.8 * len(firsts[switched:]))

        model["relay-a"] = (0.1, 1e6, 0.0)  # back up: exploration notices
        firsts = [self.deliver(model, 1_000_000)[0] for _ in range(100)]
        back = firsts.index("relay-a")
        self.assertLess(back, 60)
        self.assertEqual(self.order(size=1_000_000)[0], "relay-a")
        self.assertGreater(firsts[-20:].count("relay-a"), 15)


class WatchTestCase(SynchronousTestCase):
    def watch(self, routes: dict[str, str], zones=(ZONE,), board=None) -> DNSBLWatch:
        self.clock = Clock()
        self.resolver = FakeResolver()
        self.board = board or Scoreboard(self.clock)
        watch = DNSBLWatch(self.clock, self.resolver, self.board, routes, zones, 3600)
        self.addCleanup(watch.stop)
        return watch

    def check(self, watch: DNSBLWatch) -> list:
        with capturedLogs() as events:
            self.successResultOf(watch.check())  # the fake DNS answers at once
        return events


class DNSBLTests(WatchTestCase):
    def test_query_names_reverse_the_address_rfc5782(self):
        self.assertEqual(query_name("192.0.2.99", "dnsbl.example"), "99.2.0.192.dnsbl.example")
        self.assertEqual(
            query_name("2001:db8:1:2:3:4:567:89ab", "dnsbl.example"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.dnsbl.example",
        )

    def test_every_address_is_asked_on_every_zone(self):
        watch = self.watch({"v4": "192.0.2.99", "v6": "2001:db8::1"}, zones=(ZONE, "bl.test"))
        self.check(watch)
        self.assertEqual(
            sorted(self.resolver.queries),
            sorted(
                [
                    f"99.2.0.192.{ZONE}",
                    "99.2.0.192.bl.test",
                    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2." + ZONE,
                    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test",
                ]
            ),
        )

    def test_a_loopback_answer_lists_the_route_and_warns(self):
        watch = self.watch({"relay-a": "192.0.2.99", "relay-b": "192.0.2.98"})
        self.resolver.a[f"99.2.0.192.{ZONE}"] = ["127.0.0.2", "127.0.0.4"]
        events = self.check(watch)
        self.assertEqual(self.board.listed, {"relay-a": ZONE})
        self.assertEqual(
            messages(events, LogLevel.warn),
            [
                f"route relay-a: egress address 192.0.2.99 is listed on {ZONE}; "
                "set aside until delisted"
            ],
        )
        # Still listed: no new line.
        self.assertEqual(messages(self.check(watch)), [])

    def test_nxdomain_delists_and_says_so(self):
        watch = self.watch({"relay-a": "192.0.2.99"})
        self.board.set_listed("relay-a", ZONE)
        events = self.check(watch)
        self.assertEqual(self.board.listed, {})
        self.assertEqual(
            messages(events, LogLevel.info),
            [
                f"route relay-a: egress address 192.0.2.99 is no longer listed on {ZONE}; "
                "back in use"
            ],
        )

    def test_a_list_error_code_changes_nothing_and_warns(self):
        watch = self.watch({"relay-a": "192.0.2.99", "relay-b": "192.0.2.98"})
        self.board.set_listed("relay-a", ZONE)
        for address in ("99.2.0.192", "98.2.0.192"):
            self.resolver.a[f"{address}.{ZONE}"] = ["127.255.255.254"]
        events = self.check(watch)
        self.assertEqual(self.board.listed, {"relay-a": ZONE})
        warnings = messages(events, LogLevel.warn)
        self.assertEqual(len(warnings), 2)
        self.assertIn("127.255.255.254", warnings[0])
        self.assertIn("error code", warnings[0])

    def test_an_answer_outside_loopback_changes_nothing(self):
        watch = self.watch({"relay-a": "192.0.2.99"})
        self.resolver.a[f"99.2.0.192.{ZONE}"] = ["198.51.100.7"]  # a resolver's ad server
        self.check(watch)
        self.assertEqual(self.board.listed, {})

    def test_a_dns_failure_keeps_the_state(self):
        watch = self.watch({"relay-a": "192.0.2.99", "relay-b": "192.0.2.98"})
        self.board.set_listed("relay-a", ZONE)
        for address in ("99.2.0.192", "98.2.0.192"):
            self.resolver.a[f"{address}.{ZONE}"] = RoutingError("4.4.3", "timeout")
        events = self.check(watch)
        self.assertEqual(self.board.listed, {"relay-a": ZONE})
        self.assertEqual(len(messages(events, LogLevel.warn)), 2)

    def test_listed_on_another_zone_moves_the_listing(self):
        watch = self.watch({"relay-a": "192.0.2.99"}, zones=(ZONE, "bl.test"))
        self.board.set_listed("relay-a", ZONE)
        self.resolver.a["99.2.0.192.bl.test"] = ["127.0.0.2"]
        self.check(watch)
        self.assertEqual(self.board.listed, {"relay-a": "bl.test"})

    def test_a_listing_on_a_zone_no_longer_configured_is_dropped(self):
        watch = self.watch({"relay-a": "192.0.2.99"}, zones=("bl.test",))
        self.board.set_listed("relay-a", ZONE)
        self.check(watch)
        self.assertEqual(self.board.listed, {})

    def test_the_loop_checks_now_and_every_interval(self):
        watch = self.watch({"relay-a": "192.0.2.99"})
        watch.start()
        self.assertEqual(len(self.resolver.queries), 1)
        self.clock.advance(3599)
        self.assertEqual(len(self.resolver.queries), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.resolver.queries), 2)
        watch.stop()
        self.clock.advance(3600)
        self.assertEqual(len(self.resolver.queries), 2)

    def test_the_loop_survives_an_exception(self):
        class Broken(Scoreboard):
            def set_listed(self, route, zone):
                raise RuntimeError("boom")

        watch = self.watch({"relay-a": "192.0.2.99"}, board=Broken(Clock()))
        watch.start()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.board.__class__ = Scoreboard  # mended
        self.resolver.a[f"99.2.0.192.{ZONE}"] = ["127.0.0.2"]
        self.clock.advance(3600)
        self.assertEqual(self.board.listed, {"relay-a": ZONE})
