"""Failed-login delays and lockouts, driven by a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.throttle import LoginThrottle, ThrottleSettings, ip_key

# Small numbers so every threshold is a few calls away.
SETTINGS = ThrottleSettings(
    delay=1.0, max_delay=8.0, lockout_after=5, lockout_time=100.0, max_tracked=1000
)
# Same, but never locking, for tests about delays alone.
NO_LOCKOUT = ThrottleSettings(
    delay=1.0, max_delay=8.0, lockout_after=1000, lockout_time=100.0, max_tracked=1000
)

ALICE = "alice@example.org"
BOB = "bob@example.org"


class ThrottleTestCase(SynchronousTestCase):
    def throttle(self, settings: ThrottleSettings = SETTINGS) -> LoginThrottle:
        self.clock = Clock()
        return LoginThrottle(self.clock, settings)


class DelayTests(ThrottleTestCase):
    def test_delay_doubles_with_each_failure_up_to_max_delay(self):
        throttle = self.throttle(NO_LOCKOUT)
        delays = [throttle.failed("192.0.2.1", ALICE) for _ in range(7)]
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0])

    def test_delay_uses_the_larger_of_the_ip_and_account_counts(self):
        throttle = self.throttle(NO_LOCKOUT)
        for _ in range(3):
            throttle.failed("192.0.2.1", ALICE)
        # A fresh IP against a guessed-at account pays the account's count ...
        self.assertEqual(throttle.failed("192.0.2.2", ALICE), 8.0)
        # ... and a busy IP against a fresh account pays the IP's.
        self.assertEqual(throttle.failed("192.0.2.1", BOB), 8.0)
        self.assertEqual(throttle.failed("192.0.2.3", "carol@example.org"), 1.0)

    def test_huge_failure_counts_stay_at_max_delay(self):
        throttle = self.throttle(
            ThrottleSettings(delay=1.0, max_delay=8.0, lockout_after=10**9, max_tracked=10)
        )
        for _ in range(2000):
            delay = throttle.failed("192.0.2.1", None)
        self.assertEqual(delay, 8.0)


class LockoutTests(ThrottleTestCase):
    def test_account_locked_after_lockout_after_failures_from_many_ips(self):
        throttle = self.throttle()
        for i in range(1, 5):
            throttle.failed(f"192.0.2.{i}", ALICE)
        self.assertEqual(throttle.locked("198.51.100.7", ALICE), 0.0)
        throttle.failed("192.0.2.5", ALICE)
        # Locked from every IP, including ones that never failed ...
        self.assertEqual(throttle.locked("198.51.100.7", ALICE), 100.0)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 100.0)
        # ... but those IPs may still try other accounts.
        self.assertEqual(throttle.locked("192.0.2.1", BOB), 0.0)
        self.assertEqual(throttle.locked("192.0.2.1", None), 0.0)
        self.clock.advance(30)
        self.assertEqual(throttle.locked("198.51.100.7", ALICE), 70.0)

    def test_ip_locked_for_every_account(self):
        throttle = self.throttle()
        for i in range(4):
            throttle.failed("192.0.2.1", f"user{i}@example.org")
        self.assertEqual(throttle.locked("192.0.2.1", "nobody@example.org"), 0.0)
        throttle.failed("192.0.2.1", "user4@example.org")
        self.assertEqual(throttle.locked("192.0.2.1", "nobody@example.org"), 100.0)
        self.assertEqual(throttle.locked("192.0.2.1", None), 100.0)
        # Other IPs are not punished for this one, even on the same accounts.
        self.assertEqual(throttle.locked("192.0.2.2", "user0@example.org"), 0.0)

    def test_locked_reports_the_longest_applicable_lock(self):
        throttle = self.throttle()
        for i in range(5):
            throttle.failed("192.0.2.1", f"user{i}@example.org")  # the IP, locked at t=0
        self.clock.advance(50)
        for i in range(5):
            throttle.failed(f"198.51.100.{i}", ALICE)  # the account, locked at t=50
        self.clock.advance(10)
        self.assertEqual(throttle.locked("192.0.2.1", None), 40.0)
        self.assertEqual(throttle.locked("192.0.2.9", ALICE), 90.0)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 90.0)

    def test_lockout_expires(self):
        throttle = self.throttle()
        for _ in range(5):
            throttle.failed("192.0.2.1", ALICE)
        self.clock.advance(99.5)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 0.5)
        self.clock.advance(0.5)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 0.0)
        # The lock ends with the memory of its failures: the next one starts over.
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 1.0)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 0.0)

    def test_failures_while_locked_do_not_extend_the_lock(self):
        throttle = self.throttle()
        for _ in range(5):
            throttle.failed("192.0.2.1", ALICE)
        self.clock.advance(60)
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 8.0)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 40.0)
        self.clock.advance(40)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 0.0)
        # But they were remembered, so a client that kept going is locked again at once.
        throttle.failed("192.0.2.1", ALICE)
        self.assertEqual(throttle.locked("192.0.2.1", ALICE), 100.0)

    def test_lockout_is_logged_once_per_key(self):
        throttle = self.throttle()
        with capturedLogs() as events:
            for i in range(7):
                throttle.failed(f"192.0.2.{i}", ALICE)
        messages = [formatEvent(event) for event in events]
        self.assertEqual(
            messages, ["login lockout for alice@example.org after 5 failures (100.0s)"]
        )


class DecayTests(ThrottleTestCase):
    def test_success_forgets_failures(self):
        throttle = self.throttle()
        for _ in range(4):
            throttle.failed("192.0.2.1", ALICE)
        throttle.succeeded("192.0.2.1", ALICE)
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 1.0)
        self.assertEqual(throttle.failed("192.0.2.2", ALICE), 2.0)
        self.assertEqual(throttle.failed("192.0.2.1", BOB), 2.0)

    def test_success_on_another_account_keeps_the_victims_failures(self):
        throttle = self.throttle()
        for _ in range(3):
            throttle.failed("192.0.2.1", ALICE)
        throttle.succeeded("192.0.2.1", "mallory@example.org")
        self.assertEqual(throttle.failed("192.0.2.1", BOB), 1.0)  # the IP was forgiven
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 8.0)  # ALICE's 4th failure

    def test_failures_are_forgotten_after_lockout_time(self):
        throttle = self.throttle(NO_LOCKOUT)
        for _ in range(3):
            throttle.failed("192.0.2.1", ALICE)
        self.clock.advance(99)
        # Still remembered, and this failure renews the memory of all of them ...
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 8.0)
        self.clock.advance(99)
        # ... so they still count long after the first three happened.
        self.assertEqual(throttle.failed("192.0.2.2", ALICE), 8.0)
        self.assertEqual(throttle.failed("192.0.2.1", BOB), 8.0)
        self.clock.advance(100)
        self.assertEqual(throttle.failed("192.0.2.1", ALICE), 1.0)

    def test_expired_keys_are_dropped(self):
        throttle = self.throttle()
        throttle.failed("192.0.2.1", ALICE)
        self.clock.advance(50)
        throttle.failed("192.0.2.2", BOB)
        self.clock.advance(50)
        throttle.locked("203.0.113.1", None)
        self.assertEqual(list(throttle._ips.entries), ["192.0.2.2"])
        self.assertEqual(list(throttle._accounts.entries), [BOB])


class KeyTests(ThrottleTestCase):
    def test_ipv6_grouped_by_64(self):
        throttle = self.throttle()
        self.assertEqual(throttle.failed("2001:db8:1:2::1", None), 1.0)
        self.assertEqual(throttle.failed("2001:db8:1:2:ffff:ffff:ffff:ffff", None), 2.0)
        self.assertEqual(throttle.failed("2001:db8:1:3::1", None), 1.0)  # another /64
        for _ in range(3):
            throttle.failed("2001:db8:1:2::abcd", None)
        self.assertEqual(throttle.locked("2001:db8:1:2:1234::5", ALICE), 100.0)
        self.assertEqual(throttle.locked("2001:db8:1:3::1", ALICE), 0.0)
        self.assertEqual(ip_key("2001:DB8:1:2:3:4:5:6"), "2001:db8:1:2::/64")

    def test_ipv4_counted_by_full_address(self):
        throttle = self.throttle()
        self.assertEqual(throttle.failed("192.0.2.1", None), 1.0)
        self.assertEqual(throttle.failed("192.0.2.2", None), 1.0)
        self.assertEqual(ip_key("192.0.2.1"), "192.0.2.1")

    def test_ipv4_mapped_ipv6_counts_as_its_ipv4_address(self):
        throttle = self.throttle()
        throttle.failed("::ffff:192.0.2.1", None)
        self.assertEqual(throttle.failed("192.0.2.1", None), 2.0)
        # Not one shared ::ffff:0:0/64 key for every IPv4 client.
        self.assertEqual(throttle.failed("::ffff:192.0.2.2", None), 1.0)

    def test_unparseable_ip_is_used_as_is(self):
        throttle = self.throttle()
        self.assertEqual(ip_key("/run/mail.sock"), "/run/mail.sock")
        throttle.failed("/run/mail.sock", None)
        self.assertEqual(throttle.failed("/run/mail.sock", None), 2.0)
        self.assertEqual(throttle.failed("/run/other.sock", None), 1.0)

    def test_unknown_account_counts_against_ip_only(self):
        throttle = self.throttle()
        delays = [throttle.failed("192.0.2.1", None) for _ in range(4)]
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0])
        self.assertEqual(throttle._accounts.entries, {})
        self.assertEqual(throttle.failed("192.0.2.2", ALICE), 1.0)
        throttle.failed("192.0.2.1", None)
        self.assertEqual(throttle.locked("192.0.2.1", None), 100.0)
        self.assertEqual(throttle.locked("192.0.2.2", ALICE), 0.0)


class MemoryTests(ThrottleTestCase):
    def test_memory_is_bounded(self):
        settings = ThrottleSettings(
            delay=1.0, max_delay=8.0, lockout_after=1000, lockout_time=100.0, max_tracked=3
        )
        throttle = self.throttle(settings)
        for i in range(1000):
            throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}@example.org")
        self.assertEqual(len(throttle._ips.entries), 3)
        self.assertEqual(len(throttle._accounts.entries), 3)

    def test_least_recently_failed_key_is_forgotten_first(self):
        settings = ThrottleSettings(
            delay=1.0, max_delay=8.0, lockout_after=1000, lockout_time=100.0, max_tracked=3
        )
        throttle = self.throttle(settings)
        for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"]:
            throttle.failed(ip, None)
        throttle.failed("192.0.2.4", None)  # the table is full: forgets 192.0.2.2
        self.assertEqual(throttle.failed("192.0.2.1", None), 4.0)
        self.assertEqual(throttle.failed("192.0.2.2", None), 1.0)


class HoldTests(ThrottleTestCase):
    def test_hold_fires_after_the_delay_on_the_clock(self):
        throttle = self.throttle()
        d = throttle.hold(4.0)
        self.assertNoResult(d)
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))

    def test_hold_of_zero_fires_at_once(self):
        throttle = self.throttle()
        self.assertIsNone(self.successResultOf(throttle.hold(0)))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SettingsTests(SynchronousTestCase):
    def test_settings_that_would_disable_throttling_are_refused(self):
        for bad in [
            {"delay": -1.0},
            {"max_delay": -1.0},
            {"lockout_after": 0},
            {"lockout_time": 0.0},
            {"max_tracked": 0},
        ]:
            self.assertRaises(ValueError, ThrottleSettings, **bad)

    def test_defaults(self):
        self.assertEqual(
            ThrottleSettings(),
            ThrottleSettings(
                delay=1.0, max_delay=30.0, lockout_after=10, lockout_time=900.0, max_tracked=100_000
            ),
        )
