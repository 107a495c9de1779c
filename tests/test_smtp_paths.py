"""MAIL and RCPT arguments (RFC 5321 §4.1.1.2-3, §4.1.2; RFC 6531; RFC 1870; RFC 6152)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.smtp.paths import (
    NULL_PATH,
    MailParams,
    Path,
    SMTPReplyError,
    is_valid_domain,
    parse_mail,
    parse_rcpt,
)

INVALID_UTF8 = b"\xff".decode("utf-8", "surrogateescape")


class ReplyAssertions:
    def assertReply(self, code, enhanced, f, *args):
        error = self.assertRaises(SMTPReplyError, f, *args)
        self.assertEqual((error.code, error.enhanced), (code, enhanced), str(error))
        return error

    def assertBadAddress(self, f, *args):
        return self.assertReply(501, "5.1.3", f, *args)

    def assertBadSyntax(self, f, *args):
        return self.assertReply(501, "5.5.4", f, *args)


def sender(arg):
    return parse_mail(arg)[0]


def params(arg):
    return parse_mail(arg)[1]


class SMTPReplyErrorTests(SynchronousTestCase):
    def test_str_is_the_reply_line(self):
        error = SMTPReplyError(501, "5.1.3", "Invalid domain name")
        self.assertEqual(str(error), "501 5.1.3 Invalid domain name")
        self.assertEqual(
            (error.code, error.enhanced, error.text), (501, "5.1.3", "Invalid domain name")
        )


class PathSyntaxTests(ReplyAssertions, SynchronousTestCase):
    def test_simple_address(self):
        self.assertEqual(
            parse_mail("FROM:<alice@example.org>"),
            (Path("alice", "example.org", False), MailParams()),
        )
        self.assertEqual(
            parse_rcpt("TO:<bob@example.org>", False), Path("bob", "example.org", False)
        )

    def test_keyword_is_case_insensitive(self):
        self.assertEqual(sender("from:<a@example.org>"), Path("a", "example.org", False))
        self.assertEqual(parse_rcpt("To:<b@example.org>", False), Path("b", "example.org", False))

    def test_local_part_keeps_its_case_and_domain_is_lower_cased(self):
        self.assertEqual(sender("FROM:<Alice@Example.ORG>"), Path("Alice", "example.org", False))

    def test_null_sender_is_none(self):
        self.assertIs(NULL_PATH, None)
        self.assertEqual(parse_mail("FROM:<>"), (None, MailParams()))

    def test_null_sender_takes_parameters(self):
        self.assertEqual(parse_mail("FROM:<> SIZE=10"), (None, MailParams(size=10)))

    def test_empty_recipient_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<>", False)

    def test_postmaster_without_domain_is_a_recipient(self):
        for arg in ("TO:<postmaster>", "TO:<Postmaster>", "TO:<POSTMASTER>"):
            with self.subTest(arg=arg):
                self.assertEqual(parse_rcpt(arg, False), Path("postmaster", "", False))

    def test_postmaster_address_is_just_postmaster(self):
        self.assertEqual(parse_rcpt("TO:<postmaster>", False).address, "postmaster")

    def test_postmaster_with_domain_is_an_ordinary_mailbox(self):
        self.assertEqual(
            parse_rcpt("TO:<Postmaster@Example.org>", False),
            Path("Postmaster", "example.org", False),
        )

    def test_postmaster_without_domain_is_not_a_sender(self):
        self.assertBadAddress(parse_mail, "FROM:<postmaster>")

    def test_recipient_without_domain_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<alice>", False)
        self.assertBadAddress(parse_rcpt, "TO:<alice@>", False)

    def test_sender_without_domain_is_refused(self):
        self.assertBadAddress(parse_mail, "FROM:<alice>")
        self.assertBadAddress(parse_mail, "FROM:<alice@>")

    def test_one_space_after_the_colon_is_tolerated(self):
        self.assertEqual(sender("FROM: <a@example.org>"), Path("a", "example.org", False))
        self.assertEqual(parse_rcpt("TO: <a@example.org>", False), Path("a", "example.org", False))

    def test_two_spaces_after_the_colon_are_refused(self):
        self.assertBadSyntax(parse_mail, "FROM:  <a@example.org>")

    def test_leading_space_before_the_keyword_is_tolerated(self):
        self.assertEqual(sender(" FROM:<a@example.org>"), Path("a", "example.org", False))

    def test_missing_brackets_are_a_syntax_error_with_usage(self):
        for arg in ("FROM:a@example.org", "FROM:<a@example.org", "FROM:a@example.org>", "FROM:"):
            with self.subTest(arg=arg):
                error = self.assertBadSyntax(parse_mail, arg)
                self.assertEqual(error.text, "Syntax: MAIL FROM:<address>")
        error = self.assertBadSyntax(parse_rcpt, "TO:a@example.org", False)
        self.assertEqual(error.text, "Syntax: RCPT TO:<address>")

    def test_wrong_or_missing_keyword_is_a_syntax_error(self):
        for arg in ("TO:<a@example.org>", "<a@example.org>", "FROM <a@example.org>", "FROM :<a@b>"):
            with self.subTest(arg=arg):
                self.assertBadSyntax(parse_mail, arg)
        self.assertBadSyntax(parse_rcpt, "FROM:<a@example.org>", False)

    def test_text_after_the_path_that_is_not_parameters_is_refused(self):
        for arg in ("FROM:<a@example.org>x", "FROM:<a@example.org> =x", "FROM:<a@b> SIZE==1"):
            with self.subTest(arg=arg):
                self.assertBadSyntax(parse_mail, arg)

    def test_space_inside_the_path_is_refused(self):
        for arg in ("FROM:< a@example.org>", "FROM:<a @example.org>", "FROM:<a@ example.org>"):
            with self.subTest(arg=arg):
                self.assertBadAddress(parse_mail, arg)

    def test_nested_brackets_are_refused(self):
        error = self.assertRaises(SMTPReplyError, parse_mail, "FROM:<<a@example.org>>")
        self.assertEqual(error.code, 501)

    def test_path_of_256_octets_is_accepted_and_longer_is_refused(self):
        domain = ".".join(["d" * 63] * 3)  # 191 octets
        local = "l" * 62  # "<" + 62 + "@" + 191 + ">" = 256
        self.assertEqual(sender(f"FROM:<{local}@{domain}>"), Path(local, domain, False))
        self.assertBadAddress(parse_mail, f"FROM:<{local}x@{domain}>")


class SourceRouteTests(ReplyAssertions, SynchronousTestCase):
    def test_source_route_is_discarded(self):
        self.assertEqual(
            parse_rcpt("TO:<@a.example:b@c.example>", False), Path("b", "c.example", False)
        )

    def test_multi_hop_source_route_is_discarded(self):
        self.assertEqual(parse_rcpt("TO:<@a,@b:c@d>", False), Path("c", "d", False))
        self.assertEqual(
            sender("FROM:<@a.example,@b.example:user@c.example>"), Path("user", "c.example", False)
        )

    def test_only_the_final_domain_is_left_for_the_relay_check(self):
        # The '@us:victim@elsewhere' trick: the route names us, the mailbox is elsewhere.
        path = parse_rcpt("TO:<@mx.local.example:victim@elsewhere.example>", False)
        self.assertEqual(path.domain, "elsewhere.example")
        self.assertEqual(path.address, "victim@elsewhere.example")

    def test_malformed_routes_are_refused(self):
        for arg in (
            "TO:<@a.example>",
            "TO:<@:b@c.example>",
            "TO:<@a.example,:b@c.example>",
            "TO:<@a.example,b.example:c@d.example>",
            "TO:<@a.example;@b.example:c@d.example>",
            "TO:<@a.example.:c@d.example>",
            "TO:<@[192.0.2.1]:c@d.example>",
            "TO:<@a_b.example:c@d.example>",
        ):
            with self.subTest(arg=arg):
                self.assertBadAddress(parse_rcpt, arg, False)

    def test_route_before_bare_postmaster_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<@a.example:postmaster>", False)

    def test_route_may_precede_a_quoted_local_part(self):
        self.assertEqual(
            parse_rcpt('TO:<@a.example:"x:y"@c.example>', False), Path("x:y", "c.example", True)
        )


class LocalPartTests(ReplyAssertions, SynchronousTestCase):
    def test_percent_hack_stays_in_the_local_part(self):
        self.assertEqual(
            parse_rcpt("TO:<user%remote.example@local.example>", False),
            Path("user%remote.example", "local.example", False),
        )

    def test_bang_path_stays_in_the_local_part(self):
        self.assertEqual(
            parse_rcpt("TO:<remote!user@local.example>", False),
            Path("remote!user", "local.example", False),
        )

    def test_all_atext_specials_are_accepted(self):
        local = "!#$%&'*+-/=?^_`{|}~"
        self.assertEqual(sender(f"FROM:<{local}@example.org>"), Path(local, "example.org", False))

    def test_dotted_local_part_is_accepted(self):
        self.assertEqual(sender("FROM:<first.last@example.org>").local, "first.last")

    def test_leading_trailing_and_double_dots_are_refused(self):
        for local in (".a", "a.", "a..b", "."):
            with self.subTest(local=local):
                self.assertBadAddress(parse_mail, f"FROM:<{local}@example.org>")

    def test_specials_outside_atext_are_refused_unquoted(self):
        for local in ("a,b", "a:b", "a;b", "a(b)", "a[b]", "a\\b", 'a"b', "a\x00b", "a\x7fb"):
            with self.subTest(local=local):
                self.assertBadAddress(parse_mail, f"FROM:<{local}@example.org>")

    def test_two_at_signs_are_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<a@b@example.org>", False)
        self.assertBadAddress(parse_rcpt, "TO:<a@@example.org>", False)

    def test_empty_local_part_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<@example.org>", False)

    def test_quoted_local_part_containing_an_at_sign(self):
        path = parse_rcpt('TO:<"b@remote.example"@local.example>', False)
        self.assertEqual(path, Path("b@remote.example", "local.example", True))
        self.assertEqual(path.address, '"b@remote.example"@local.example')

    def test_quoted_local_part_may_contain_spaces_and_a_closing_bracket(self):
        path = sender('FROM:<"a b>c"@example.org> SIZE=5')
        self.assertEqual(path, Path("a b>c", "example.org", True))

    def test_quoted_pairs_are_unescaped_and_escaped_again(self):
        path = sender(r'FROM:<"a\"b\\c\d"@example.org>')
        self.assertEqual(path.local, 'a"b\\cd')
        self.assertEqual(path.address, r'"a\"b\\cd"@example.org')

    def test_quoted_local_part_stays_quoted_in_the_address(self):
        path = sender('FROM:<"alice"@example.org>')
        self.assertEqual(path, Path("alice", "example.org", True))
        self.assertEqual(path.address, '"alice"@example.org')

    def test_empty_quoted_local_part_is_legal(self):
        self.assertEqual(sender('FROM:<""@example.org>'), Path("", "example.org", True))

    def test_malformed_quoted_local_parts_are_refused(self):
        for local in ('"abc', '"a"b', '"a\x00b"', '"a\tb"', '"a"."b"', '"a\\'):
            with self.subTest(local=local):
                self.assertBadAddress(parse_rcpt, f"TO:<{local}@example.org>", False)

    def test_local_part_of_64_octets_is_accepted(self):
        self.assertEqual(sender("FROM:<" + "x" * 64 + "@example.org>").local, "x" * 64)

    def test_local_part_over_64_octets_is_refused(self):
        error = self.assertBadAddress(parse_mail, "FROM:<" + "x" * 65 + "@example.org>")
        self.assertIn("too long", error.text)

    def test_local_part_limit_counts_utf8_octets(self):
        self.assertEqual(sender("FROM:<" + "ö" * 32 + "@example.org> SMTPUTF8").local, "ö" * 32)
        self.assertBadAddress(parse_mail, "FROM:<" + "ö" * 33 + "@example.org> SMTPUTF8")

    def test_local_part_limit_counts_the_quotes(self):
        self.assertEqual(sender('FROM:<"' + "x" * 62 + '"@example.org>').local, "x" * 62)
        self.assertBadAddress(parse_mail, 'FROM:<"' + "x" * 63 + '"@example.org>')


class DomainTests(ReplyAssertions, SynchronousTestCase):
    def test_single_label_domain_is_accepted(self):
        self.assertEqual(parse_rcpt("TO:<root@localhost>", False), Path("root", "localhost", False))

    def test_trailing_dot_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<user@example.com.>", False)

    def test_empty_labels_are_refused(self):
        for domain in (".example.com", "example..com", "."):
            with self.subTest(domain=domain):
                self.assertBadAddress(parse_rcpt, f"TO:<user@{domain}>", False)

    def test_label_of_63_octets_is_accepted(self):
        domain = "l" * 63 + ".example"
        self.assertEqual(parse_rcpt(f"TO:<a@{domain}>", False).domain, domain)

    def test_label_over_63_octets_is_refused(self):
        self.assertBadAddress(parse_rcpt, "TO:<a@" + "l" * 64 + ".example>", False)

    def test_hyphens_at_the_ends_of_labels_are_refused(self):
        for domain in ("-a.example", "a-.example", "a.-example"):
            with self.subTest(domain=domain):
                self.assertBadAddress(parse_rcpt, f"TO:<a@{domain}>", False)

    def test_inner_hyphens_and_digits_are_fine(self):
        self.assertEqual(parse_rcpt("TO:<a@mx-1.9.example>", False).domain, "mx-1.9.example")

    def test_characters_outside_ldh_are_refused(self):
        for domain in ("a_b.example", "a!b.example", "a%b.example", "a,b.example"):
            with self.subTest(domain=domain):
                self.assertBadAddress(parse_rcpt, f"TO:<a@{domain}>", False)


class AddressLiteralTests(ReplyAssertions, SynchronousTestCase):
    def test_ipv4_literal(self):
        path = parse_rcpt("TO:<a@[192.0.2.1]>", False)
        self.assertEqual(path, Path("a", "[192.0.2.1]", False))
        self.assertTrue(path.is_address_literal)
        self.assertEqual(path.address, "a@[192.0.2.1]")

    def test_ipv6_literal_is_normalized(self):
        path = parse_rcpt("TO:<a@[ipv6:2001:DB8:0:0::1]>", False)
        self.assertEqual(path.domain, "[IPv6:2001:db8::1]")
        self.assertTrue(path.is_address_literal)

    def test_ipv4_mapped_ipv6_literal_is_accepted(self):
        self.assertTrue(parse_rcpt("TO:<a@[IPv6:::ffff:192.0.2.1]>", False).is_address_literal)

    def test_domain_is_not_an_address_literal(self):
        self.assertFalse(parse_rcpt("TO:<a@example.org>", False).is_address_literal)

    def test_invalid_literals_are_refused(self):
        for literal in (
            "[192.0.2.256]",
            "[192.0.2]",
            "[192.0.2.01]",
            "[IPv6:2001:db8::g]",
            "[IPv6:192.0.2.1]",
            "[IPv6:fe80::1%eth0]",
            "[2001:db8::1.2.3.4.5]",
            "[]",
            "[192.0.2.1",
            "192.0.2.1]",
        ):
            with self.subTest(literal=literal):
                self.assertBadAddress(parse_rcpt, f"TO:<a@{literal}>", False)

    def test_general_address_literal_is_unsupported(self):
        error = self.assertBadAddress(parse_rcpt, "TO:<a@[x-tag:something]>", False)
        self.assertIn("nsupported address literal", error.text)


class InternationalizedTests(ReplyAssertions, SynchronousTestCase):
    def test_8bit_address_without_smtputf8_is_refused(self):
        for arg in ("FROM:<jörg@example.org>", "FROM:<a@bücher.example>", 'FROM:<"ö"@example.org>'):
            with self.subTest(arg=arg):
                error = self.assertReply(553, "5.6.7", parse_mail, arg)
                self.assertEqual(error.text, "Non-ASCII address requires SMTPUTF8")
        self.assertReply(553, "5.6.7", parse_rcpt, "TO:<jörg@example.org>", False)

    def test_8bit_source_route_without_smtputf8_is_refused(self):
        self.assertReply(553, "5.6.7", parse_rcpt, "TO:<@bücher.example:a@example.org>", False)

    def test_utf8_with_smtputf8_is_accepted_and_domain_becomes_its_a_label(self):
        path, mail_params = parse_mail("FROM:<Jörg@Bücher.example> SMTPUTF8")
        self.assertTrue(mail_params.smtputf8)
        self.assertEqual(path, Path("Jörg", "xn--bcher-kva.example", False))
        self.assertFalse(path.is_ascii)
        self.assertEqual(
            parse_rcpt("TO:<jörg@bücher.example>", True),
            Path("jörg", "xn--bcher-kva.example", False),
        )

    def test_ascii_local_part_at_a_u_label_domain_is_ascii_once_converted(self):
        path = parse_rcpt("TO:<a@bücher.example>", True)
        self.assertEqual(path.address, "a@xn--bcher-kva.example")
        self.assertTrue(path.is_ascii)

    def test_sharp_s_is_kept_as_in_idna2008(self):
        self.assertEqual(parse_rcpt("TO:<a@straße.de>", True).domain, "xn--strae-oqa.de")

    def test_utf8_quoted_local_part_with_smtputf8(self):
        self.assertEqual(
            parse_rcpt('TO:<"jö rg"@example.org>', True), Path("jö rg", "example.org", True)
        )

    def test_invalid_idna_is_refused(self):
        for domain in ("ü-.example", "a\u200db.example", "ü..example", "ü_x.example"):
            with self.subTest(domain=domain):
                self.assertBadAddress(parse_rcpt, f"TO:<a@{domain}>", True)

    def test_trailing_dot_is_refused_for_u_labels_too(self):
        for domain in ("bücher.example.", "bücher.example\u3002"):
            with self.subTest(domain=domain):
                self.assertBadAddress(parse_rcpt, f"TO:<a@{domain}>", True)

    def test_invalid_utf8_is_a_syntax_error(self):
        for arg in (
            f"FROM:<a{INVALID_UTF8}@example.org>",
            f"FROM:<a@example.org{INVALID_UTF8}> SMTPUTF8",
            f"FROM:<a@example.org> AUTH={INVALID_UTF8}",
            f"FROM:{INVALID_UTF8}",
        ):
            with self.subTest(arg=arg):
                self.assertBadSyntax(parse_mail, arg)
        self.assertBadSyntax(parse_rcpt, f"TO:<a{INVALID_UTF8}@example.org>", True)

    def test_is_ascii_for_plain_addresses(self):
        self.assertTrue(parse_rcpt("TO:<a@example.org>", False).is_ascii)


class MailParameterTests(ReplyAssertions, SynchronousTestCase):
    def test_size_is_parsed(self):
        self.assertEqual(params("FROM:<a@example.org> SIZE=12345").size, 12345)
        self.assertEqual(params("FROM:<a@example.org> size=0").size, 0)

    def test_size_of_20_digits_is_accepted_and_more_is_refused(self):
        self.assertEqual(params("FROM:<a@b> SIZE=" + "9" * 20).size, int("9" * 20))
        self.assertBadSyntax(parse_mail, "FROM:<a@b> SIZE=" + "9" * 21)

    def test_malformed_size_is_refused(self):
        for value in ("SIZE", "SIZE=", "SIZE=-1", "SIZE=1k", "SIZE=+5", "SIZE=\u0661"):
            with self.subTest(value=value):
                self.assertBadSyntax(parse_mail, f"FROM:<a@b> {value}")

    def test_body_values(self):
        self.assertEqual(params("FROM:<a@b> BODY=7BIT").body, "7BIT")
        self.assertEqual(params("FROM:<a@b> body=8bitmime").body, "8BITMIME")

    def test_other_body_types_are_unsupported(self):
        for value in ("BINARYMIME", "8BIT", "7bıt"):
            with self.subTest(value=value):
                self.assertReply(555, "5.5.4", parse_mail, f"FROM:<a@b> BODY={value}")

    def test_body_without_value_is_a_syntax_error(self):
        self.assertBadSyntax(parse_mail, "FROM:<a@b> BODY")

    def test_smtputf8_flag(self):
        self.assertTrue(params("FROM:<a@b> SMTPUTF8").smtputf8)
        self.assertTrue(params("FROM:<a@b> smtputf8").smtputf8)
        self.assertFalse(params("FROM:<a@b>").smtputf8)

    def test_smtputf8_with_a_value_is_refused(self):
        self.assertBadSyntax(parse_mail, "FROM:<a@b> SMTPUTF8=yes")

    def test_auth_is_kept_verbatim(self):
        self.assertEqual(params("FROM:<a@b> AUTH=<>").auth, "<>")
        self.assertEqual(params("FROM:<a@b> AUTH=e+3Dmc2@example.com").auth, "e+3Dmc2@example.com")

    def test_malformed_auth_is_refused(self):
        for value in ("AUTH", "AUTH=a+zz", "AUTH=a+", "AUTH=jörg"):
            with self.subTest(value=value):
                self.assertBadSyntax(parse_mail, f"FROM:<a@b> {value} SMTPUTF8")

    def test_all_parameters_together(self):
        self.assertEqual(
            params("FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8 AUTH=<>"),
            MailParams(size=1, body="8BITMIME", smtputf8=True, auth="<>"),
        )

    def test_extra_and_trailing_spaces_between_parameters_are_tolerated(self):
        self.assertEqual(params("FROM:<a@b>  SIZE=1   BODY=7BIT "), MailParams(size=1, body="7BIT"))
        self.assertEqual(params("FROM:<a@b> "), MailParams())

    def test_tab_is_not_a_separator(self):
        self.assertBadSyntax(parse_mail, "FROM:<a@b>\tSIZE=1")
        self.assertBadSyntax(parse_mail, "FROM:<a@b> SIZE=1\tBODY=7BIT")

    def test_unknown_parameters_are_unsupported(self):
        for param in ("RET=HDRS", "ENVID=x", "NOTIFY=NEVER", "ORCPT=rfc822;a@b", "xfoo"):
            with self.subTest(param=param):
                error = self.assertReply(555, "5.5.4", parse_mail, f"FROM:<a@b> {param}")
                keyword = param.partition("=")[0].upper()
                self.assertEqual(error.text, f"Unsupported parameter {keyword}")

    def test_duplicate_parameters_are_refused(self):
        for arg in ("SIZE=1 SIZE=2", "BODY=7BIT body=7bit", "SMTPUTF8 SMTPUTF8"):
            with self.subTest(arg=arg):
                self.assertBadSyntax(parse_mail, f"FROM:<a@b> {arg}")

    def test_parameters_are_read_before_the_path_needs_smtputf8(self):
        self.assertEqual(sender("FROM:<ö@b> SIZE=1 SMTPUTF8").local, "ö")


class RcptParameterTests(ReplyAssertions, SynchronousTestCase):
    def test_rcpt_parameters_are_refused(self):
        for param in ("NOTIFY=NEVER", "ORCPT=rfc822;a@b", "SIZE=1", "SMTPUTF8"):
            with self.subTest(param=param):
                error = self.assertReply(555, "5.5.4", parse_rcpt, f"TO:<a@b> {param}", False)
                self.assertEqual(error.text, f"Unsupported parameter {param.partition('=')[0]}")

    def test_trailing_space_is_not_a_parameter(self):
        self.assertEqual(parse_rcpt("TO:<a@b> ", False), Path("a", "b", False))

    def test_malformed_rcpt_parameters_are_a_syntax_error(self):
        self.assertBadSyntax(parse_rcpt, "TO:<a@b>NOTIFY=NEVER", False)
        self.assertBadSyntax(parse_rcpt, "TO:<a@b> =x", False)


class IsValidDomainTests(SynchronousTestCase):
    def test_valid(self):
        for domain in (
            "mail.example.org",
            "localhost",
            "XN--BCHER-KVA.example",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
        ):
            with self.subTest(domain=domain):
                self.assertTrue(is_valid_domain(domain))

    def test_invalid(self):
        for domain in (
            "",
            "example.org.",
            "a..b",
            "-a.example",
            "bücher.example",
            "a_b.example",
            "[x-tag:foo]",
            "[300.1.1.1]",
            "l" * 64 + ".example",
            "a b",
            INVALID_UTF8,
            "[192.0.2.1",
            "a@b",
        ):
            with self.subTest(domain=domain):
                self.assertFalse(is_valid_domain(domain))
