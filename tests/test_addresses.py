"""Address and domain syntax for accounts and aliases (RFC 5321 §4.1.2, RFC 6531)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.addresses import normalize_address, normalize_domain, split_address
from mailbox_appliance.errors import InvalidAddress, StoreError


class NormalizeDomainTests(SynchronousTestCase):
    def test_domain_is_lower_cased(self):
        self.assertEqual(normalize_domain("Mail.EXAMPLE.Org"), "mail.example.org")

    def test_unicode_domain_becomes_its_a_label(self):
        self.assertEqual(normalize_domain("bücher.example"), "xn--bcher-kva.example")

    def test_upper_case_unicode_domain_becomes_the_same_a_label(self):
        self.assertEqual(normalize_domain("BÜCHER.Example"), "xn--bcher-kva.example")

    def test_a_label_input_is_kept(self):
        self.assertEqual(normalize_domain("XN--BCHER-KVA.example"), "xn--bcher-kva.example")

    def test_sharp_s_is_kept_as_in_idna2008_not_folded_to_ss(self):
        # IDNA2003 mapped straße.de onto strasse.de, which is somebody else's domain.
        self.assertEqual(normalize_domain("straße.de"), "xn--strae-oqa.de")

    def test_trailing_dot_is_refused(self):
        self.assertRaises(InvalidAddress, normalize_domain, "example.org.")

    def test_single_label_is_refused(self):
        self.assertRaises(InvalidAddress, normalize_domain, "localhost")

    def test_empty_domain_is_refused(self):
        self.assertRaises(InvalidAddress, normalize_domain, "")

    def test_empty_label_is_refused(self):
        for name in ("a..example", ".example.org"):
            with self.subTest(name=name):
                self.assertRaises(InvalidAddress, normalize_domain, name)

    def test_label_of_63_characters_is_accepted(self):
        name = "l" * 63 + ".example"
        self.assertEqual(normalize_domain(name), name)

    def test_label_over_63_characters_is_refused(self):
        self.assertRaises(InvalidAddress, normalize_domain, "l" * 64 + ".example")

    def test_name_over_253_characters_is_refused(self):
        name = ".".join(["l" * 63] * 4)  # 255 characters
        self.assertRaises(InvalidAddress, normalize_domain, name)

    def test_hyphen_at_either_end_of_a_label_is_refused(self):
        for name in ("-x.example", "x-.example"):
            with self.subTest(name=name):
                self.assertRaises(InvalidAddress, normalize_domain, name)

    def test_underscore_and_space_are_refused(self):
        for name in ("ex_ample.org", "exa mple.org", " example.org"):
            with self.subTest(name=name):
                self.assertRaises(InvalidAddress, normalize_domain, name)

    def test_ip_addresses_are_not_domains(self):
        for name in ("127.0.0.1", "[127.0.0.1]", "host.123"):
            with self.subTest(name=name):
                self.assertRaises(InvalidAddress, normalize_domain, name)

    def test_digits_in_inner_labels_are_fine(self):
        self.assertEqual(normalize_domain("1.2.3.4.example"), "1.2.3.4.example")


class SplitAddressTests(SynchronousTestCase):
    def test_local_part_and_domain_are_lower_cased(self):
        self.assertEqual(split_address("Alice@Example.ORG"), ("alice", "example.org"))

    def test_unicode_domain_is_a_label_in_the_result(self):
        self.assertEqual(split_address("alice@bücher.example"), ("alice", "xn--bcher-kva.example"))

    def test_utf8_local_part_is_accepted_and_case_folded(self):
        self.assertEqual(split_address("JÖRG@example.org"), ("jörg", "example.org"))

    def test_atext_specials_are_valid_local_part_characters(self):
        self.assertEqual(split_address("a!b+c=d@example.org"), ("a!b+c=d", "example.org"))

    def test_dotted_local_part_is_accepted(self):
        self.assertEqual(split_address("first.last@example.org"), ("first.last", "example.org"))

    def test_percent_hack_is_a_plain_local_part_character(self):
        # '%' is atext (RFC 5322 §3.2.3); it must never route: the domain is the one after '@'.
        self.assertEqual(split_address("a%b@example.org"), ("a%b", "example.org"))
        self.assertEqual(
            split_address("user%elsewhere.test@example.org"), ("user%elsewhere.test", "example.org")
        )

    def test_no_at_sign_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "alice.example.org")

    def test_two_at_signs_are_refused(self):
        for address in ("a@b@example.org", "a@@example.org", "a%b@evil.test@example.org"):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_source_route_is_refused(self):
        for address in ("@a:b@c", "@relay.test:user@example.org"):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_empty_local_part_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "@example.org")

    def test_empty_domain_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "alice@")

    def test_leading_trailing_and_double_dots_in_local_part_are_refused(self):
        for address in (".a@example.org", "a.@example.org", "a..b@example.org"):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_trailing_dot_on_domain_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "a@example.org.")

    def test_single_label_domain_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "root@localhost")

    def test_address_literal_is_refused(self):
        for address in ("a@[127.0.0.1]", "a@127.0.0.1", "a@[IPv6:::1]"):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_local_part_of_64_bytes_is_accepted(self):
        local = "x" * 64
        self.assertEqual(split_address(f"{local}@example.org"), (local, "example.org"))

    def test_local_part_over_64_bytes_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, "x" * 65 + "@example.org")

    def test_local_part_limit_counts_utf8_bytes_not_characters(self):
        # 'ö' is two bytes in UTF-8: 32 of them are 64 bytes, 33 are 66.
        self.assertEqual(split_address("ö" * 32 + "@example.org")[0], "ö" * 32)
        self.assertRaises(InvalidAddress, split_address, "ö" * 33 + "@example.org")

    def test_quoted_local_parts_are_refused(self):
        for address in ('"a b"@example.org', '"ab"@example.org'):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_whitespace_and_control_characters_are_refused(self):
        for address in ("a b@example.org", " a@example.org", "a@example.org ", "a\x00@example.org"):
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, split_address, address)

    def test_non_string_is_refused(self):
        self.assertRaises(InvalidAddress, split_address, b"a@example.org")

    def test_invalid_address_is_a_store_error_with_a_one_line_message(self):
        # The CLI prints StoreErrors as they are; the message must name the address.
        with self.assertRaises(StoreError) as caught:
            split_address("no-at-sign")
        self.assertIn("no-at-sign", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))


class NormalizeAddressTests(SynchronousTestCase):
    def test_joins_the_normalized_parts(self):
        self.assertEqual(normalize_address("Alice@Bücher.Example"), "alice@xn--bcher-kva.example")

    def test_is_idempotent(self):
        once = normalize_address("JÖRG@Bücher.Example")
        self.assertEqual(normalize_address(once), once)

    def test_never_yields_a_domain_other_than_the_one_after_the_at(self):
        for address in ("a%b@example.org", "a!b@example.org", "x%y.test@example.org"):
            with self.subTest(address=address):
                self.assertEqual(normalize_address(address).rpartition("@")[2], "example.org")

    def test_invalid_address_is_refused(self):
        self.assertRaises(InvalidAddress, normalize_address, "alice@localhost")
