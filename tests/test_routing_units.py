"""Outbound routing, unit by unit: the DNS resolver against a loopback DNS server, the static
policies over a fake resolver, a recipient's fate after an attempt, and the outbound config
sections (``delivery``, ``dns``, ``routing``)."""

from __future__ import annotations

import datetime
import random

from twisted.internet import reactor
from twisted.names import client
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailbox_appliance.config import ConfigError, parse_config
from mailbox_appliance.config_delivery import RouteConfig, RoutingConfig, host_port
from mailbox_appliance.interfaces import IRoutingPolicy
from mailbox_appliance.routing import (
    Envelope,
    Hop,
    Route,
    RoutingContext,
    RoutingError,
    build_policy,
)
from mailbox_appliance.routing.dns import MAX_TTL, Resolver
from mailbox_appliance.routing.static import DirectPolicy, SmarthostPolicy
from mailbox_appliance.smtp.fate import Fate, as_utc, backoff, fate_of_reply, settlement
from mailbox_appliance.store.queue import Settlement
from tests.support.dns_server import LoopbackDNS

UTC = datetime.UTC
HOSTNAME = "mail.example.test"
ENVELOPE = Envelope("alice@example.test", ("bob@example.net",), 1234)


def records() -> dict:
    """A fresh table per test: LoopbackDNS changes entries in place."""
    return {
        # Listed out of order: the resolver sorts by preference.
        "example.net": {
            "MX": [(30, "mx3.example.net"), (10, "mx1.example.net"), (20, "mx2.example.net")]
        },
        "mx1.example.net": {"A": ["127.0.0.2", "127.0.0.3"], "AAAA": ["::2"]},
        "mx2.example.net": {"A": ["127.0.0.4"]},
        "mx3.example.net": {"AAAA": ["::4"]},
        "equal.test": {
            "MX": [
                (20, "last.equal.test"),
                (10, "a.equal.test"),
                (10, "b.equal.test"),
                (5, "first.equal.test"),
            ]
        },
        "implicit.test": {"A": ["127.0.0.5"]},
        "nullmx.test": {"MX": [(0, ".")]},
        "broken.test": "SERVFAIL",
        "silent.test": "TIMEOUT",
        # AAAA before A in the table: the resolver still answers IPv4 first.
        "dual.test": {"AAAA": ["::6"], "A": ["127.0.0.6"]},
        "noaddress.test": {"MX": [(10, "ghost.noaddress.test"), (20, "empty.noaddress.test")]},
        "empty.noaddress.test": {"TXT": ["no addresses here"]},
        "halfbroken.test": {"MX": [(10, "broken.test"), (20, "mx2.example.net")]},
        "troubled.test": {"MX": [(10, "broken.test"), (20, "ghost.noaddress.test")]},
        "relay.test": {"A": ["127.0.0.7"], "AAAA": ["::7"]},
        "2.0.0.127.dnsbl.test": {"A": ["127.0.0.2"]},
    }


class SteppedClock:
    """The real reactor for sockets and timers, with a ``seconds()`` the test moves.

    The Resolver reads ``seconds()`` only to age its cache, while twisted.names needs a real
    reactor to talk to the loopback server: everything else is delegated.
    """

    def __init__(self, real, now: float = 1_000_000.0):
        self._real = real
        self.now = now

    def seconds(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(self._real, name)


class ResolverTests(TestCase):
    timeout = 30

    def setUp(self):
        self.dns = LoopbackDNS(records())
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.clock = SteppedClock(reactor)

    def resolver(self, rng: random.Random | None = None, timeout: float = 5.0) -> Resolver:
        resolver = Resolver(self.clock, [("127.0.0.1", self.dns.port)], timeout=timeout, rng=rng)
        self.addCleanup(resolver.close)
        return resolver

    async def routing_error(self, awaitable) -> RoutingError:
        with self.assertRaises(RoutingError) as caught:
            await awaitable
        return caught.exception

    def asked(self, name: str, rtype: str) -> int:
        """How many ``rtype`` queries for ``name`` (in any letter case) reached the server."""
        return sum(1 for q, t in self.dns.queries if (q.lower(), t) == (name, rtype))

    # --- mail_hosts: RFC 5321 §5.1 and RFC 7505 ---------------------------------------------

    async def test_mx_hosts_come_lowest_preference_first(self):
        hosts = await self.resolver().mail_hosts("example.net")
        self.assertEqual(hosts, ["mx1.example.net", "mx2.example.net", "mx3.example.net"])

    async def test_equal_preferences_come_in_random_order_seeded_by_rng(self):
        orders = set()
        for seed in range(20):
            orders.add(tuple(await self.resolver(random.Random(seed)).mail_hosts("equal.test")))
        self.assertEqual(
            orders,
            {
                ("first.equal.test", "a.equal.test", "b.equal.test", "last.equal.test"),
                ("first.equal.test", "b.equal.test", "a.equal.test", "last.equal.test"),
            },
        )

    async def test_the_same_seed_gives_the_same_order(self):
        first = await self.resolver(random.Random(7)).mail_hosts("equal.test")
        again = await self.resolver(random.Random(7)).mail_hosts("equal.test")
        self.assertEqual(first, again)

    async def test_domain_without_mx_is_its_own_mail_host(self):
        resolver = self.resolver()
        self.assertEqual(await resolver.mail_hosts("implicit.test"), ["implicit.test"])
        self.assertEqual(
            await resolver.next_hops("implicit.test", 25),
            [Hop("implicit.test", "127.0.0.5", 25)],
        )

    async def test_null_mx_is_a_permanent_5_1_10(self):
        e = await self.routing_error(self.resolver().mail_hosts("nullmx.test"))
        self.assertEqual(e.status, "5.1.10")
        self.assertTrue(e.permanent)
        self.assertIn("nullmx.test", e.text)

    async def test_nonexistent_domain_is_a_permanent_5_1_2(self):
        e = await self.routing_error(self.resolver().mail_hosts("nowhere.test"))
        self.assertEqual(e.status, "5.1.2")
        self.assertTrue(e.permanent)

    async def test_servfail_is_a_temporary_4_4_3(self):
        e = await self.routing_error(self.resolver().mail_hosts("broken.test"))
        self.assertEqual(e.status, "4.4.3")
        self.assertFalse(e.permanent)
        self.assertIn("broken.test", e.text)

    async def test_no_answer_at_all_is_a_temporary_4_4_3(self):
        e = await self.routing_error(self.resolver(timeout=0.3).mail_hosts("silent.test"))
        self.assertEqual(e.status, "4.4.3")
        self.assertFalse(e.permanent)

    # --- addresses and lookup_a -------------------------------------------------------------

    async def test_addresses_are_ipv4_then_ipv6(self):
        resolver = self.resolver()
        self.assertEqual(await resolver.addresses("dual.test"), ["127.0.0.6", "::6"])
        self.assertEqual(
            await resolver.addresses("mx1.example.net"), ["127.0.0.2", "127.0.0.3", "::2"]
        )
        self.assertEqual(await resolver.addresses("mx3.example.net"), ["::4"])

    async def test_addresses_of_a_nonexistent_name_are_none(self):
        self.assertEqual(await self.resolver().addresses("nowhere.test"), [])

    async def test_addresses_of_a_name_in_trouble_is_a_temporary_error(self):
        e = await self.routing_error(self.resolver().addresses("broken.test"))
        self.assertEqual(e.status, "4.4.3")

    async def test_addresses_of_an_ip_literal_ask_nobody(self):
        resolver = self.resolver()
        self.assertEqual(await resolver.addresses("192.0.2.1"), ["192.0.2.1"])
        self.assertEqual(await resolver.addresses("2001:db8::1"), ["2001:db8::1"])
        self.assertEqual(self.dns.queries, [])

    async def test_lookup_a_answers_ipv4_only_and_nothing_for_a_missing_name(self):
        resolver = self.resolver()
        self.assertEqual(await resolver.lookup_a("2.0.0.127.dnsbl.test"), ["127.0.0.2"])
        self.assertEqual(await resolver.lookup_a("3.0.0.127.dnsbl.test"), [])
        self.assertEqual(await resolver.lookup_a("mx3.example.net"), [])  # AAAA only
        self.assertEqual(self.asked("mx3.example.net", "AAAA"), 0)

    # --- next_hops and relay_hops -----------------------------------------------------------

    async def test_next_hops_are_every_address_of_every_mx_host_in_order(self):
        hops = await self.resolver().next_hops("example.net", 2525)
        self.assertEqual(
            hops,
            [
                Hop("mx1.example.net", "127.0.0.2", 2525),
                Hop("mx1.example.net", "127.0.0.3", 2525),
                Hop("mx1.example.net", "::2", 2525),
                Hop("mx2.example.net", "127.0.0.4", 2525),
                Hop("mx3.example.net", "::4", 2525),
            ],
        )

    async def test_an_mx_host_without_addresses_is_skipped(self):
        self.dns.set("noaddress.test", "MX", [(10, "ghost.noaddress.test"), (20, "relay.test")])
        hops = await self.resolver().next_hops("noaddress.test", 25)
        self.assertEqual(hops, [Hop("relay.test", "127.0.0.7", 25), Hop("relay.test", "::7", 25)])

    async def test_no_mx_host_with_an_address_is_a_permanent_5_1_2(self):
        e = await self.routing_error(self.resolver().next_hops("noaddress.test", 25))
        self.assertEqual(e.status, "5.1.2")
        self.assertTrue(e.permanent)

    async def test_one_mx_host_in_trouble_leaves_the_others(self):
        hops = await self.resolver().next_hops("halfbroken.test", 25)
        self.assertEqual(hops, [Hop("mx2.example.net", "127.0.0.4", 25)])

    async def test_trouble_and_no_address_elsewhere_is_temporary(self):
        e = await self.routing_error(self.resolver().next_hops("troubled.test", 25))
        self.assertEqual(e.status, "4.4.3")
        self.assertFalse(e.permanent)

    async def test_relay_given_as_ip_literal_is_its_one_hop_without_a_query(self):
        resolver = self.resolver()
        self.assertEqual(
            await resolver.relay_hops("192.0.2.9", 587), [Hop("192.0.2.9", "192.0.2.9", 587)]
        )
        self.assertEqual(self.dns.queries, [])

    async def test_relay_given_as_name_has_a_hop_per_address(self):
        hops = await self.resolver().relay_hops("relay.test", 587)
        self.assertEqual(hops, [Hop("relay.test", "127.0.0.7", 587), Hop("relay.test", "::7", 587)])
        self.assertEqual(self.asked("relay.test", "MX"), 0)

    async def test_relay_without_address_is_a_temporary_4_4_3(self):
        e = await self.routing_error(self.resolver().relay_hops("nowhere.test", 587))
        self.assertEqual(e.status, "4.4.3")
        self.assertFalse(e.permanent)

    # --- the TTL cache ----------------------------------------------------------------------

    async def test_answers_are_reused_while_their_ttl_lasts(self):
        self.dns.ttl = 60
        resolver = self.resolver()
        first = await resolver.mail_hosts("example.net")
        self.assertEqual(await resolver.mail_hosts("Example.NET"), first)
        await resolver.addresses("mx1.example.net")
        self.clock.advance(59)
        self.assertEqual(
            await resolver.addresses("mx1.example.net"), ["127.0.0.2", "127.0.0.3", "::2"]
        )
        self.assertEqual(self.asked("example.net", "MX"), 1)
        self.assertEqual(self.asked("mx1.example.net", "A"), 1)
        self.assertEqual(self.asked("mx1.example.net", "AAAA"), 1)

    async def test_answers_with_ttl_0_are_asked_every_time(self):
        self.dns.ttl = 0
        resolver = self.resolver()
        await resolver.mail_hosts("example.net")
        await resolver.mail_hosts("example.net")
        await resolver.addresses("mx1.example.net")
        await resolver.addresses("mx1.example.net")
        self.assertEqual(self.asked("example.net", "MX"), 2)
        self.assertEqual(self.asked("mx1.example.net", "A"), 2)

    async def test_an_expired_answer_is_asked_again(self):
        self.dns.ttl = 60
        resolver = self.resolver()
        self.assertEqual(await resolver.addresses("relay.test"), ["127.0.0.7", "::7"])
        self.dns.set("relay.test", "A", "127.0.0.8")
        self.clock.advance(61)
        self.assertEqual(await resolver.addresses("relay.test"), ["127.0.0.8", "::7"])
        self.assertEqual(self.asked("relay.test", "A"), 2)

    async def test_a_long_ttl_is_kept_at_most_max_ttl(self):
        self.dns.ttl = 10 * MAX_TTL
        resolver = self.resolver()
        await resolver.mail_hosts("example.net")
        self.clock.advance(MAX_TTL - 1)
        await resolver.mail_hosts("example.net")
        self.assertEqual(self.asked("example.net", "MX"), 1)
        self.clock.advance(2)
        await resolver.mail_hosts("example.net")
        self.assertEqual(self.asked("example.net", "MX"), 2)


class ResolverCloseTests(TestCase):
    def parse_calls(self, resolver: client.Resolver) -> list:
        """Pending twisted.names re-reads of resolv.conf for ``resolver``."""
        return [
            call
            for call in reactor.getDelayedCalls()
            if call.active() and call.func == resolver.maybeParseConfig
        ]

    def test_close_stops_rereading_resolv_conf(self):
        resolver = Resolver(reactor)
        names = resolver._resolver  # made at first use, reading /etc/resolv.conf
        self.addCleanup(lambda: [call.cancel() for call in self.parse_calls(names)])
        self.assertEqual(len(self.parse_calls(names)), 1)
        resolver.close()
        self.assertEqual(self.parse_calls(names), [])

    def test_close_before_any_lookup_makes_no_resolver(self):
        resolver = Resolver(reactor)
        resolver.close()
        self.assertIsNone(resolver._client)


# --- the static policies ----------------------------------------------------------------------


class FakeResolver:
    """Canned hops; a name in ``failures`` fails with its RoutingError."""

    def __init__(self):
        self.failures: dict[str, RoutingError] = {}
        self.calls: list[tuple[str, str, int]] = []

    async def next_hops(self, domain: str, port: int) -> list[Hop]:
        self.calls.append(("next_hops", domain, port))
        if domain in self.failures:
            raise self.failures[domain]
        return [Hop(f"mx.{domain}", "192.0.2.25", port)]

    async def relay_hops(self, host: str, port: int) -> list[Hop]:
        self.calls.append(("relay_hops", host, port))
        if host in self.failures:
            raise self.failures[host]
        return [Hop(host, "192.0.2.2", port)]


TEMPORARY = RoutingError("4.4.3", "DNS A lookup failed: DNSServerError")
NULL_MX = RoutingError("5.1.10", "the domain accepts no mail (null MX)")


class StaticPolicyTests(SynchronousTestCase):
    def setUp(self):
        self.resolver = FakeResolver()
        self.password_file = self.mktemp()
        self.set_password("s3cret\n")

    def set_password(self, text: str) -> None:
        with open(self.password_file, "w", encoding="utf-8") as f:
            f.write(text)

    def policy(self, policy: str = "smarthost", smarthost: list | None = None, **routing):
        routes = [
            {
                "name": "org-relay",
                "relay": "relay.example.org:587",
                "source": "192.0.2.10",
                "tls": "required",
                "verify": False,
                "ca": "/etc/ssl/relay.pem",
                "username": "box",
                "password_file": self.password_file,
            },
            {"name": "backup", "relay": "backup.test:2525"},
            {"name": "v6-relay", "relay": "[2001:db8::25]:25"},
        ]
        if smarthost is None:
            smarthost = [
                {"match": "*.example.org", "routes": ["org-relay", "backup", "direct"]},
                {"match": "*", "routes": ["v6-relay"]},
            ]
        config = parse_config(
            {
                "hostname": HOSTNAME,
                "delivery": {"port": 2526},
                "routing": {"policy": policy, "routes": routes, "smarthost": smarthost, **routing},
            }
        )
        context = RoutingContext(reactor, config, self.resolver, None, random.Random(0))
        return build_policy(context)

    def routes(self, policy, domain: str) -> list[Route]:
        return self.successResultOf(policy.routes(ENVELOPE, domain))

    def failure(self, policy, domain: str) -> RoutingError:
        return self.failureResultOf(policy.routes(ENVELOPE, domain), RoutingError).value

    def test_both_policies_provide_the_interface(self):
        direct, smarthost = self.policy("direct"), self.policy("smarthost")
        self.assertIsInstance(direct, DirectPolicy)
        self.assertIsInstance(smarthost, SmarthostPolicy)
        self.assertTrue(verifyObject(IRoutingPolicy, direct))
        self.assertTrue(verifyObject(IRoutingPolicy, smarthost))

    def test_direct_goes_to_the_mx_hosts_on_the_delivery_port(self):
        (route,) = self.routes(self.policy("direct"), "example.org")
        self.assertEqual(route.name, "direct")
        self.assertEqual(route.hops, (Hop("mx.example.org", "192.0.2.25", 2526),))
        self.assertEqual((route.source, route.tls, route.auth), (None, "opportunistic", None))
        self.assertEqual(self.resolver.calls, [("next_hops", "example.org", 2526)])

    def test_direct_ignores_smarthost_rules(self):
        (route,) = self.routes(self.policy("direct"), "mail.example.org")
        self.assertEqual(route.name, "direct")
        self.assertEqual([call[0] for call in self.resolver.calls], ["next_hops"])

    def test_direct_uses_a_configured_direct_route(self):
        policy = self.policy(
            "direct", smarthost=[], routes=[{"name": "direct", "source": "192.0.2.7"}]
        )
        (route,) = self.routes(policy, "example.org")
        self.assertEqual((route.name, route.source), ("direct", "192.0.2.7"))

    def test_direct_passes_a_routing_error_on(self):
        self.resolver.failures["example.org"] = NULL_MX
        self.assertIs(self.failure(self.policy("direct"), "example.org"), NULL_MX)

    def test_smarthost_first_matching_rule_wins(self):
        policy = self.policy()
        self.assertEqual(
            [r.name for r in self.routes(policy, "mail.example.org")],
            ["org-relay", "backup", "direct"],
        )
        self.assertEqual([r.name for r in self.routes(policy, "example.com")], ["v6-relay"])

    def test_smarthost_takes_the_first_match_not_the_most_specific(self):
        policy = self.policy(
            smarthost=[
                {"match": "*", "routes": ["backup"]},
                {"match": "*.example.org", "routes": ["org-relay"]},
            ]
        )
        self.assertEqual([r.name for r in self.routes(policy, "mail.example.org")], ["backup"])

    def test_smarthost_matches_domains_case_insensitively(self):
        policy = self.policy(smarthost=[{"match": "*.EXAMPLE.org", "routes": ["backup"]}])
        self.assertEqual([r.name for r in self.routes(policy, "Mail.Example.ORG")], ["backup"])

    def test_smarthost_fallbacks_keep_their_order_and_their_hops(self):
        relay, backup, direct = self.routes(self.policy(), "mail.example.org")
        self.assertEqual(relay.hops, (Hop("relay.example.org", "192.0.2.2", 587),))
        self.assertEqual(
            (relay.source, relay.tls, relay.verify, relay.ca),
            ("192.0.2.10", "required", False, "/etc/ssl/relay.pem"),
        )
        self.assertEqual(backup.hops, (Hop("backup.test", "192.0.2.2", 2525),))
        self.assertEqual(direct.hops, (Hop("mx.mail.example.org", "192.0.2.25", 2526),))
        self.assertEqual(
            self.resolver.calls,
            [
                ("relay_hops", "relay.example.org", 587),
                ("relay_hops", "backup.test", 2525),
                ("next_hops", "mail.example.org", 2526),
            ],
        )

    def test_smarthost_relay_given_as_bracketed_ipv6(self):
        (route,) = self.routes(self.policy(), "example.com")
        self.assertEqual(route.hops, (Hop("2001:db8::25", "192.0.2.2", 25),))

    def test_smarthost_domain_no_rule_matches_goes_direct(self):
        policy = self.policy(smarthost=[{"match": "*.example.org", "routes": ["org-relay"]}])
        (route,) = self.routes(policy, "example.com")
        self.assertEqual(route.name, "direct")
        self.assertEqual(self.resolver.calls, [("next_hops", "example.com", 2526)])

    def test_route_in_dns_trouble_is_left_out(self):
        self.resolver.failures["relay.example.org"] = TEMPORARY
        names = [r.name for r in self.routes(self.policy(), "mail.example.org")]
        self.assertEqual(names, ["backup", "direct"])

    def test_permanent_error_wins_when_no_route_resolves(self):
        self.resolver.failures["relay.example.org"] = TEMPORARY
        self.resolver.failures["backup.test"] = TEMPORARY
        self.resolver.failures["mail.example.org"] = NULL_MX
        self.assertIs(self.failure(self.policy(), "mail.example.org"), NULL_MX)

    def test_first_temporary_error_when_no_route_resolves_and_none_is_permanent(self):
        later = RoutingError("4.4.3", "the relay backup.test has no address")
        self.resolver.failures["relay.example.org"] = TEMPORARY
        self.resolver.failures["backup.test"] = later
        self.resolver.failures["mail.example.org"] = RoutingError("4.4.3", "MX lookup failed")
        error = self.failure(self.policy(), "mail.example.org")
        self.assertIs(error, TEMPORARY)
        self.assertFalse(error.permanent)

    def test_auth_password_is_read_from_its_file_at_each_call(self):
        policy = self.policy()
        self.assertEqual(self.routes(policy, "mail.example.org")[0].auth, ("box", "s3cret"))
        self.set_password("changed\r\n")
        self.assertEqual(self.routes(policy, "mail.example.org")[0].auth, ("box", "changed"))
        self.assertIsNone(self.routes(policy, "mail.example.org")[1].auth)

    def test_repr_of_a_route_never_shows_the_password(self):
        routes = self.routes(self.policy(), "mail.example.org")
        for text in (repr(routes[0]), str(routes[0]), repr(routes)):
            self.assertNotIn("s3cret", text)
        self.assertIn("'box'", repr(routes[0]))
        self.assertIn("***", repr(routes[0]))


# --- fate of a recipient ----------------------------------------------------------------------


def delivery(**overrides):
    return parse_config({"hostname": HOSTNAME, "delivery": overrides}).delivery


NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def row(age: datetime.timedelta, attempts: int = 0, **extra) -> dict:
    return {"id": 7, "created": NOW - age, "attempts": attempts, **extra}


class FateOfReplyTests(SynchronousTestCase):
    def test_2xx_is_sent(self):
        self.assertEqual(
            fate_of_reply(250, "2.0.0", "Ok: queued", "mx.example.net"),
            Fate("sent", "2.0.0", "250 2.0.0 Ok: queued", "mx.example.net"),
        )

    def test_4xx_is_temporary_with_its_enhanced_code(self):
        fate = fate_of_reply(451, "4.7.1", "Greylisted", "mx.example.net")
        self.assertEqual((fate.kind, fate.status), ("temporary", "4.7.1"))

    def test_5xx_is_permanent_with_its_enhanced_code(self):
        fate = fate_of_reply(550, "5.1.1", "No such user", "mx.example.net")
        self.assertEqual(
            fate, Fate("permanent", "5.1.1", "550 5.1.1 No such user", "mx.example.net")
        )

    def test_enhanced_code_of_another_class_gives_the_generic_status(self):
        fate = fate_of_reply(550, "4.2.2", "Mailbox full", None)
        self.assertEqual((fate.kind, fate.status), ("permanent", "5.0.0"))
        self.assertEqual(fate.reason, "550 4.2.2 Mailbox full")
        self.assertEqual(fate_of_reply(421, "5.7.1", "Go away", None).status, "4.0.0")

    def test_no_or_malformed_enhanced_code_gives_the_generic_status(self):
        self.assertEqual(fate_of_reply(450, None, "Try later", None).status, "4.0.0")
        self.assertEqual(fate_of_reply(554, None, "No", None).status, "5.0.0")
        self.assertEqual(fate_of_reply(550, "5.1", "Odd", None).status, "5.0.0")
        self.assertEqual(fate_of_reply(550, "5.1.1234", "Odd", None).status, "5.0.0")

    def test_reason_without_enhanced_code_is_code_and_text(self):
        self.assertEqual(fate_of_reply(554, None, "Rejected", None).reason, "554 Rejected")

    def test_whitespace_and_line_breaks_in_the_text_are_collapsed(self):
        fate = fate_of_reply(550, "5.1.1", "  No such\r\n user\there  ", None)
        self.assertEqual(fate.reason, "550 5.1.1 No such user here")


class BackoffTests(SynchronousTestCase):
    def test_doubles_from_first_and_stops_at_max_interval(self):
        retry = delivery(retry={"first": 60, "max_interval": 600}).retry
        self.assertEqual([backoff(retry, n) for n in range(6)], [60, 120, 240, 480, 600, 600])

    def test_very_many_attempts_stay_at_max_interval(self):
        retry = delivery(retry={"first": 60, "max_interval": 3600}).retry
        self.assertEqual(backoff(retry, 10_000), 3600.0)


class SettlementTests(SynchronousTestCase):
    def setUp(self):
        self.delivery = delivery(
            retry={"first": 60, "max_interval": 3600, "give_up_after": 86400},
            delay_notice=14400,
        )
        self.temporary = Fate("temporary", "4.7.1", "451 4.7.1 Greylisted", "mx.example.net")

    def test_sent_is_removed(self):
        fate = Fate("sent", "2.0.0", "250 Ok", "mx.example.net")
        self.assertEqual(
            settlement(row(datetime.timedelta(hours=1)), fate, NOW, self.delivery),
            Settlement(7, "sent"),
        )

    def test_permanent_bounces_with_status_and_remote_mta(self):
        fate = Fate("permanent", "5.1.1", "550 5.1.1 No such user", "mx.example.net")
        self.assertEqual(
            settlement(row(datetime.timedelta(minutes=1)), fate, NOW, self.delivery),
            Settlement(7, "bounce", None, "550 5.1.1 No such user", "5.1.1", "mx.example.net"),
        )

    def test_temporary_retries_after_the_backoff_of_its_attempts(self):
        decided = settlement(
            row(datetime.timedelta(minutes=10), attempts=2), self.temporary, NOW, self.delivery
        )
        self.assertEqual(
            decided,
            Settlement(
                7,
                "retry",
                NOW + datetime.timedelta(seconds=240),
                "451 4.7.1 Greylisted",
                "4.7.1",
                "mx.example.net",
                notify_delay=False,
            ),
        )

    def test_temporary_past_give_up_after_bounces_with_4_4_7_and_the_last_reason(self):
        for age in (datetime.timedelta(days=1), datetime.timedelta(days=3)):
            decided = settlement(row(age, attempts=20), self.temporary, NOW, self.delivery)
            self.assertEqual(decided.action, "bounce")
            self.assertEqual(decided.status, "4.4.7")
            self.assertEqual(decided.remote_mta, "mx.example.net")
            self.assertIn("451 4.7.1 Greylisted", decided.reason)

    def test_temporary_just_before_give_up_after_still_retries(self):
        age = datetime.timedelta(seconds=86399)
        self.assertEqual(settlement(row(age), self.temporary, NOW, self.delivery).action, "retry")

    def test_delay_notice_once_past_delay_notice(self):
        def notify(age: datetime.timedelta, **extra) -> bool:
            return settlement(row(age, **extra), self.temporary, NOW, self.delivery).notify_delay

        self.assertFalse(notify(datetime.timedelta(hours=3, minutes=59)))
        self.assertTrue(notify(datetime.timedelta(hours=4)))
        self.assertTrue(notify(datetime.timedelta(hours=5), delay_notified=False))
        self.assertFalse(notify(datetime.timedelta(hours=5), delay_notified=True))

    def test_delay_notice_0_never_notifies(self):
        never = delivery(delay_notice=0)
        decided = settlement(row(datetime.timedelta(days=4)), self.temporary, NOW, never)
        self.assertEqual(decided.action, "retry")
        self.assertFalse(decided.notify_delay)

    def test_naive_created_time_from_sqlite_counts_as_utc(self):
        naive = (NOW - datetime.timedelta(hours=25)).replace(tzinfo=None)
        decided = settlement(
            {"id": 7, "created": naive, "attempts": 3}, self.temporary, NOW, self.delivery
        )
        self.assertEqual(decided.status, "4.4.7")
        recent = (NOW - datetime.timedelta(hours=23)).replace(tzinfo=None)
        decided = settlement(
            {"id": 7, "created": recent, "attempts": 3}, self.temporary, NOW, self.delivery
        )
        self.assertEqual(decided.action, "retry")

    def test_as_utc_leaves_aware_times_alone(self):
        naive = datetime.datetime(2024, 5, 1, 12, 0)
        self.assertEqual(as_utc(naive), datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
        paris = datetime.datetime(
            2024, 5, 1, 14, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        )
        self.assertIs(as_utc(paris), paris)


# --- the outbound configuration ---------------------------------------------------------------


def problems(**sections) -> list[str]:
    try:
        parse_config({"hostname": HOSTNAME, **sections})
    except ConfigError as e:
        return e.errors
    return []


class OutboundConfigTests(SynchronousTestCase):
    def assertProblem(self, sections: dict, key: str, fragment: str = "") -> str:
        """Exactly one error starts with ``key: `` and contains ``fragment``; return it."""
        found = [e for e in problems(**sections) if e.startswith(f"{key}: ") and fragment in e]
        self.assertEqual(len(found), 1, f"{key}: {fragment!r} not in {problems(**sections)}")
        return found[0]

    def password_file(self) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("secret\n")
        return path

    def test_a_full_outbound_config_is_accepted(self):
        config = parse_config(
            {
                "hostname": HOSTNAME,
                "delivery": {"port": 2525, "retry": {"first": 30, "max_interval": 30}},
                "dns": {"nameservers": ["127.0.0.1:5353", "[::1]:53", "::1", "192.0.2.53"]},
                "routing": {
                    "policy": "smarthost",
                    "routes": [
                        {
                            "name": "relay",
                            "relay": "relay.test:587",
                            "source": "192.0.2.10",
                            "public_address": "2001:db8::10",
                            "tls": "required",
                            "username": "box",
                            "password_file": self.password_file(),
                        }
                    ],
                    "smarthost": [{"match": "*", "routes": ["relay", "direct"]}],
                    "adaptive": {"routes": ["relay", "direct"], "explore": 0, "smoothing": 1},
                },
            }
        )
        self.assertEqual(config.routing.route("relay").relay, "relay.test:587")
        self.assertEqual(config.routing.smarthost[0].routes, ("relay", "direct"))
        self.assertEqual(len(config.dns.nameservers), 4)

    # --- delivery ---

    def test_delivery_port_must_be_a_port_number(self):
        for port in (0, 65536):
            self.assertProblem({"delivery": {"port": port}}, "delivery.port", "port number")
        self.assertEqual(problems(delivery={"port": 65535}), [])

    def test_delivery_limits_and_timeouts_must_be_more_than_0(self):
        names = (
            "max_connections",
            "max_connections_per_domain",
            "max_recipients",
            "connect_timeout",
            "reuse_time",
            "poll_interval",
        )
        for name in names:
            self.assertProblem({"delivery": {name: 0}}, f"delivery.{name}", "more than 0")
        # All at once, each naming its key.
        self.assertEqual(len(problems(delivery={name: 0 for name in names})), len(names))

    def test_delivery_retry_first_is_at_least_1_second(self):
        self.assertProblem({"delivery": {"retry": {"first": 0}}}, "delivery.retry.first")

    def test_delivery_retry_max_interval_is_at_least_first(self):
        retry = {"first": 600, "max_interval": 599}
        self.assertProblem({"delivery": {"retry": retry}}, "delivery.retry.max_interval")

    # --- dns ---

    def test_dns_nameserver_must_be_an_ip_address_with_optional_port(self):
        for bad in ("resolver.example", "127.0.0.1:0", "127.0.0.1:domain", "2001:db8::1:99999x"):
            error = self.assertProblem(
                {"dns": {"nameservers": ["127.0.0.1", bad]}}, "dns.nameservers[1]"
            )
            self.assertIn("IP address", error)
        self.assertEqual(problems(dns={"nameservers": ["127.0.0.1", "[::1]:5353"]}), [])

    def test_dns_timeout_must_be_more_than_0(self):
        self.assertProblem({"dns": {"timeout": 0}}, "dns.timeout", "more than 0")

    def test_dns_nameservers_must_be_a_list(self):
        self.assertProblem(
            {"dns": {"nameservers": "127.0.0.1"}}, "dns.nameservers", "expected a list"
        )

    # --- routing: routes ---

    def test_routes_is_a_list_of_mappings(self):
        self.assertProblem(
            {"routing": {"routes": {"name": "x"}}}, "routing.routes", "expected a list"
        )
        self.assertProblem(
            {"routing": {"routes": ["relay.test:25"]}}, "routing.routes[0]", "expected a mapping"
        )

    def test_unknown_key_in_a_route_is_refused_with_its_path(self):
        routes = [{"name": "a", "relay": "a.test:25"}, {"name": "b", "relays": "b.test:25"}]
        error = self.assertProblem({"routing": {"routes": routes}}, "routing.routes[1].relays")
        self.assertIn("unknown key", error)

    def test_route_names_are_unique(self):
        routes = [{"name": "a", "relay": "a.test:25"}, {"name": "a", "relay": "b.test:25"}]
        self.assertProblem({"routing": {"routes": routes}}, "routing.routes[1].name", "twice")

    def test_route_without_a_name_is_refused(self):
        routes = [{"relay": "relay.test:25"}]
        self.assertProblem({"routing": {"routes": routes}}, "routing.routes[0].name")

    def test_route_relay_is_host_colon_port(self):
        for bad in ("relay.test", "relay.test:0", ":25", "2001:db8::1:25"):
            routes = [{"name": "r", "relay": bad}]
            self.assertProblem(
                {"routing": {"routes": routes}}, "routing.routes[0].relay", "host:port"
            )

    def test_route_source_and_public_address_are_ip_addresses(self):
        for key in ("source", "public_address"):
            routes = [{"name": "ok"}, {"name": "r", key: "egress.example"}]
            error = self.assertProblem({"routing": {"routes": routes}}, f"routing.routes[1].{key}")
            self.assertIn("IP address", error)

    def test_route_tls_is_a_known_mode(self):
        error = self.assertProblem(
            {"routing": {"routes": [{"name": "r", "tls": "always"}]}}, "routing.routes[0].tls"
        )
        self.assertIn("none, opportunistic, required", error)

    def test_route_auth_needs_username_and_password_file_together(self):
        for auth in ({"username": "box"}, {"password_file": self.password_file()}):
            routes = [{"name": "r", "relay": "r.test:587", **auth}]
            self.assertProblem({"routing": {"routes": routes}}, "routing.routes[0]", "both")

    def test_route_password_file_must_be_readable(self):
        routes = [{"name": "r", "username": "box", "password_file": self.mktemp()}]
        self.assertProblem(
            {"routing": {"routes": routes}}, "routing.routes[0].password_file", "cannot read"
        )

    def test_route_auth_needs_tls(self):
        route = {
            "name": "r",
            "tls": "none",
            "username": "box",
            "password_file": self.password_file(),
        }
        self.assertProblem({"routing": {"routes": [route]}}, "routing.routes[0].tls", "needs TLS")

    # --- routing: smarthost, adaptive, policy ---

    def test_smarthost_rule_names_at_least_one_route(self):
        smarthost = [{"match": "*", "routes": ["direct"]}, {"match": "*.test", "routes": []}]
        self.assertProblem(
            {"routing": {"smarthost": smarthost}}, "routing.smarthost[1].routes", "at least one"
        )

    def test_smarthost_rule_names_only_defined_routes(self):
        smarthost = [{"match": "*", "routes": ["direct", "nope"]}]
        self.assertProblem(
            {"routing": {"smarthost": smarthost}}, "routing.smarthost[0].routes", "'nope'"
        )

    def test_smarthost_rule_routes_must_be_a_list(self):
        smarthost = [{"match": "*", "routes": "direct"}]
        self.assertProblem(
            {"routing": {"smarthost": smarthost}}, "routing.smarthost[0].routes", "expected a list"
        )

    def test_smarthost_policy_needs_a_rule(self):
        self.assertProblem(
            {"routing": {"policy": "smarthost"}}, "routing.smarthost", "at least one rule"
        )

    def test_adaptive_routes_must_exist_and_not_be_empty(self):
        self.assertProblem(
            {"routing": {"adaptive": {"routes": ["nope"]}}}, "routing.adaptive.routes", "'nope'"
        )
        self.assertProblem(
            {"routing": {"adaptive": {"routes": []}}}, "routing.adaptive.routes", "at least one"
        )

    def test_adaptive_explore_is_a_fraction_below_1(self):
        self.assertProblem({"routing": {"adaptive": {"explore": 1}}}, "routing.adaptive.explore")
        self.assertEqual(problems(routing={"adaptive": {"explore": 0.99}}), [])

    def test_adaptive_smoothing_is_above_0_and_at_most_1(self):
        for bad in (0, 1.5):
            self.assertProblem(
                {"routing": {"adaptive": {"smoothing": bad}}}, "routing.adaptive.smoothing"
            )

    def test_adaptive_dnsbl_interval_is_at_least_1_second(self):
        dnsbl = {"interval": 0}
        self.assertProblem(
            {"routing": {"adaptive": {"dnsbl": dnsbl}}}, "routing.adaptive.dnsbl.interval"
        )

    def test_unknown_policy_lists_the_installed_ones(self):
        error = self.assertProblem(
            {"routing": {"policy": "fastest"}}, "routing.policy", "'fastest'"
        )
        for name in ("adaptive", "direct", "smarthost"):
            self.assertIn(name, error.partition("installed:")[2])

    # --- RoutingConfig.route and host_port ---

    def test_direct_route_exists_without_being_listed(self):
        routing = RoutingConfig()
        self.assertEqual(routing.route("direct"), RouteConfig(name="direct"))
        self.assertIsNone(routing.route("direct").relay)
        self.assertIsNone(routing.route("relay"))

    def test_a_listed_direct_route_replaces_the_implicit_one(self):
        routing = RoutingConfig(routes=(RouteConfig(name="direct", source="192.0.2.7"),))
        self.assertEqual(routing.route("direct").source, "192.0.2.7")

    def test_host_port_splits_names_and_bracketed_ipv6(self):
        self.assertEqual(host_port("relay.test:587"), ("relay.test", 587))
        self.assertEqual(host_port("[2001:db8::1]:25"), ("2001:db8::1", 25))
        self.assertEqual(host_port("127.0.0.1:65535"), ("127.0.0.1", 65535))

    def test_host_port_uses_the_default_port_when_none_is_given(self):
        self.assertEqual(host_port("relay.test", 25), ("relay.test", 25))
        self.assertEqual(host_port("::1", 53), ("::1", 53))
        self.assertEqual(host_port("[::1]", 53), ("::1", 53))
        self.assertEqual(host_port("relay.test:2525", 25), ("relay.test", 2525))

    def test_host_port_refuses_bad_values(self):
        for bad in (
            "relay.test",
            "relay.test:",
            ":25",
            "relay.test:0",
            "relay.test:65536",
            "relay.test:smtp",
            "2001:db8::1:25",
            "[]:25",
        ):
            with self.assertRaises(ValueError, msg=bad) as caught:
                host_port(bad)
            self.assertIn("expected host:port", str(caught.exception))
