"""SRS (smtp/srs.py): forwarded mail's sender, and the bounces that come back."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.smtp.srs import SRS, is_srs, load_secret

DAY = 86400


class Clock:
    def __init__(self, days: float = 20000):
        self.now = days * DAY

    def __call__(self) -> float:
        return self.now


class SRSTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.srs = SRS(b"secret", clock=self.clock)

    def test_forward_encodes_the_sender_at_the_forwarding_domain(self):
        address = self.srs.forward("Alice@Sender.Example", "alias.example")
        local, _, domain = address.rpartition("@")
        self.assertEqual(domain, "alias.example")
        tag, digest, stamp, sender_domain, sender_local = local.split("=", 4)
        self.assertEqual((tag, sender_domain, sender_local), ("SRS0", "Sender.Example", "Alice"))
        self.assertEqual((len(digest), len(stamp)), (4, 2))

    def test_reverse_gives_the_original_sender_whatever_the_case(self):
        address = self.srs.forward("a.b=c@sender.example", "alias.example")
        self.assertEqual(self.srs.reverse(address), "a.b=c@sender.example")
        self.assertEqual(self.srs.reverse(address.lower()), "a.b=c@sender.example")

    def test_a_forged_hash_or_another_secret_is_refused(self):
        address = self.srs.forward("alice@sender.example", "alias.example")
        tag, digest, rest = address.split("=", 2)
        forged = f"{tag}={'AAAA' if digest != 'AAAA' else 'BBBB'}={rest}"
        self.assertIsNone(self.srs.reverse(forged))
        self.assertIsNone(SRS(b"other", clock=self.clock).reverse(address))
        self.assertIsNone(self.srs.reverse(address.replace("alice", "mallory")))

    def test_addresses_expire_after_21_days_across_the_1024_day_wrap(self):
        self.clock.now = 1023.5 * DAY  # the day before the stamp wraps to 0
        address = self.srs.forward("alice@sender.example", "alias.example")
        self.clock.now += 21 * DAY
        self.assertEqual(self.srs.reverse(address), "alice@sender.example")
        self.clock.now += DAY
        self.assertIsNone(self.srs.reverse(address))

    def test_non_srs_and_malformed_addresses_are_not_reversed(self):
        for address in (
            "alice@alias.example",
            "SRS0=abcd@alias.example",
            "SRS0=abcd=A=d=l@alias.example",
            "SRS0=abcd=A!=d=l@alias.example",
            "SRS0=abcd=AA==l@alias.example",
        ):
            self.assertIsNone(self.srs.reverse(address), address)

    def test_an_address_already_rewritten_is_kept(self):
        first = self.srs.forward("alice@sender.example", "hop1.example")
        self.assertTrue(is_srs(first))
        self.assertEqual(self.srs.forward(first, "hop2.example"), first)
        self.assertEqual(
            self.srs.forward("SRS1=x=y==z@a.example", "b.example"), "SRS1=x=y==z@a.example"
        )

    def test_the_null_sender_and_odd_senders_are_kept(self):
        self.assertEqual(self.srs.forward("postmaster", "alias.example"), "postmaster")


class SecretTests(SynchronousTestCase):
    def test_a_missing_secret_is_made_private_and_then_reused(self):
        path = os.path.join(os.path.abspath(self.mktemp()))
        secret = load_secret(path)
        self.assertEqual(len(secret), 64)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(load_secret(path), secret)

    def test_an_empty_secret_file_is_an_error_naming_it(self):
        path = os.path.abspath(self.mktemp())
        open(path, "w").close()
        with self.assertRaises(ValueError) as caught:
            load_secret(path)
        self.assertIn(path, str(caught.exception))
