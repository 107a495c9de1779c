"""SEARCH criteria: parsing every key of RFC 3501 §6.4.4 (and RFC 7162 MODSEQ), evaluating it."""

from __future__ import annotations

import dataclasses
import datetime

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.imap.parser import Literal, ParseError, parse_command
from mailbox_appliance.imap.search import (
    All,
    And,
    BadCharset,
    Contains,
    Date,
    HasFlag,
    Header,
    ModSeq,
    Not,
    Numbers,
    Or,
    Recent,
    Search,
    SearchMessage,
    Size,
    matches,
    needs,
    parse_search,
    uses_modseq,
)
from mailbox_appliance.imap.sequence import SequenceSet

UTC = datetime.UTC
EST = datetime.timezone(-datetime.timedelta(hours=5))


@dataclasses.dataclass
class Message:
    """An in-test SearchMessage: headers as (name, value) pairs, body as text."""

    seq: int = 3
    uid: int = 103
    flags: frozenset[str] = frozenset({"\\Seen", "$Forwarded"})
    recent: bool = False
    internal_date: datetime.datetime = datetime.datetime(2024, 3, 10, 23, 30, tzinfo=EST)
    size: int = 1000
    modseq: int = 50
    max_seq: int = 10
    max_uid: int = 110
    headers: tuple[tuple[str, str], ...] = (
        ("From", "Alice Example <alice@example.org>"),
        ("To", "bob@example.net"),
        ("Cc", "Carol <carol@example.com>"),
        ("Subject", "Straße works"),
        ("X-Empty", ""),
    )
    body: str = "Hello World, the meeting is at noon."
    date: datetime.date | None = datetime.date(2024, 3, 9)
    calls: list = dataclasses.field(default_factory=list)

    def header_values(self, name: str) -> list[str]:
        self.calls.append(("header_values", name))
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name: str) -> bool:
        self.calls.append(("has_header", name))
        return any(k.lower() == name for k, _ in self.headers)

    def sent_date(self) -> datetime.date | None:
        return self.date

    def body_contains(self, needle: str) -> bool:
        self.calls.append(("body_contains", needle))
        return needle in self.body.casefold()

    def text_contains(self, needle: str) -> bool:
        self.calls.append(("text_contains", needle))
        text = "\r\n".join(f"{k}: {v}" for k, v in self.headers) + "\r\n\r\n" + self.body
        return needle in text.casefold()


def key(criteria: bytes | list):
    return parse_search(criteria).key


class ParseKeyTests(SynchronousTestCase):
    def test_every_key_rfc3501_6_4_4(self):
        feb1 = datetime.date(1994, 2, 1)
        cases = {
            b"ALL": All(),
            b"ANSWERED": HasFlag("\\Answered"),
            b"BCC bob": Header("bcc", "bob"),
            b"BEFORE 1-Feb-1994": Date(False, "before", feb1),
            b'BODY "two words"': Contains("body", "two words"),
            b"CC carol": Header("cc", "carol"),
            b"DELETED": HasFlag("\\Deleted"),
            b"DRAFT": HasFlag("\\Draft"),
            b"FLAGGED": HasFlag("\\Flagged"),
            b"FROM Smith": Header("from", "Smith"),
            b"HEADER X-Priority 1": Header("x-priority", "1"),
            b"KEYWORD $Forwarded": HasFlag("$Forwarded"),
            b"LARGER 4096": Size("larger", 4096),
            b"NEW": And((Recent(), Not(HasFlag("\\Seen")))),
            b"NOT SEEN": Not(HasFlag("\\Seen")),
            b"OLD": Not(Recent()),
            b'ON "01-Feb-1994"': Date(False, "on", feb1),
            b"OR SEEN FLAGGED": Or(HasFlag("\\Seen"), HasFlag("\\Flagged")),
            b"RECENT": Recent(),
            b"SEEN": HasFlag("\\Seen"),
            b"SENTBEFORE 1-feb-1994": Date(True, "before", feb1),
            b"SENTON 1-FEB-1994": Date(True, "on", feb1),
            b"SENTSINCE 1-Feb-1994": Date(True, "since", feb1),
            b"SINCE 1-Feb-1994": Date(False, "since", feb1),
            b"SMALLER 10": Size("smaller", 10),
            b"SUBJECT hello": Header("subject", "hello"),
            b"TEXT hello": Contains("text", "hello"),
            b"TO bob": Header("to", "bob"),
            b"UID 1:*": Numbers(True, SequenceSet([(1, None)])),
            b"UNANSWERED": Not(HasFlag("\\Answered")),
            b"UNDELETED": Not(HasFlag("\\Deleted")),
            b"UNDRAFT": Not(HasFlag("\\Draft")),
            b"UNFLAGGED": Not(HasFlag("\\Flagged")),
            b"UNKEYWORD Junk": Not(HasFlag("Junk")),
            b"UNSEEN": Not(HasFlag("\\Seen")),
            b"2,4:*": Numbers(False, SequenceSet([(2, 2), (4, None)])),
            b"*": Numbers(False, SequenceSet([(None, None)])),
            b"(SEEN)": HasFlag("\\Seen"),
            b"(SEEN DRAFT)": And((HasFlag("\\Seen"), HasFlag("\\Draft"))),
            b"MODSEQ 0": ModSeq(0),
            b'MODSEQ "/flags/\\\\draft" all 620162338': ModSeq(620162338, "\\Draft", "all"),
            b'MODSEQ "/flags/$Junk" PRIV 5': ModSeq(5, "$Junk", "priv"),
            b'MODSEQ "/flags/x" shared 9223372036854775807': ModSeq(2**63 - 1, "x", "shared"),
        }
        for criteria, expected in cases.items():
            self.assertEqual(key(criteria), expected, criteria)
            name, sp, rest = criteria.partition(b" ")
            self.assertEqual(key(name.lower() + sp + rest), expected, name.lower())

    def test_several_keys_are_anded(self):
        self.assertEqual(
            parse_search(b"CHARSET UTF-8 DELETED FROM Smith SINCE 1-Feb-1994"),
            Search(
                "UTF-8",
                And(
                    (
                        HasFlag("\\Deleted"),
                        Header("from", "Smith"),
                        Date(False, "since", datetime.date(1994, 2, 1)),
                    )
                ),
            ),
        )

    def test_or_not_nesting(self):
        got = key(b"OR (SEEN FLAGGED) NOT OR DELETED (UID 5 NOT 1:3)")
        expected = Or(
            And((HasFlag("\\Seen"), HasFlag("\\Flagged"))),
            Not(
                Or(
                    HasFlag("\\Deleted"),
                    And(
                        (
                            Numbers(True, SequenceSet([(5, 5)])),
                            Not(Numbers(False, SequenceSet([(1, 3)]))),
                        )
                    ),
                )
            ),
        )
        self.assertEqual(got, expected)

    def test_strings_as_quoted_and_literals_with_utf8(self):
        got = key([b"SUBJECT {6}", Literal("café!".encode()), b' BODY "a \\"q\\""'])
        self.assertEqual(got, And((Header("subject", "café!"), Contains("body", 'a "q"'))))

    def test_header_field_with_empty_value(self):
        self.assertEqual(key(b'HEADER "Message-ID" ""'), Header("message-id", ""))

    def test_errors(self):
        for criteria, reason in (
            (b"", "expected a search key"),
            (b"FOO", "unknown search key FOO"),
            (b"RETURN (MIN) ALL", "unknown search key RETURN"),
            (b"FROM", "missing the argument of FROM"),
            (b"HEADER X-A", "missing a header value"),
            (b'HEADER "a:b" x', "bad header field name"),
            (b'HEADER "" x', "bad header field name"),
            (b"BEFORE 31-Feb-2024", "bad date"),
            (b"BEFORE 1-Feb-94", "expected a date"),
            (b"BEFORE 001-Feb-1994", "expected a date"),
            (b"BEFORE 1-Fev-1994", "bad month name"),
            (b'BEFORE "1-Feb-1994', "expected a date"),
            (b"BEFORE 1-Feb-1994x", "expected a date"),
            (b"LARGER x", "expected a size"),
            (b"SMALLER 4294967296", "out of range"),
            (b"KEYWORD \\Seen", "expected a keyword"),
            (b"UID x", "expected a UID set"),
            (b"UID 0", "invalid sequence set"),
            (b"0", "invalid sequence set"),
            (b"OR SEEN", "missing the second key of OR"),
            (b"NOT", "missing the argument of NOT"),
            (b"(SEEN", "missing a search key"),
            (b"()", "expected a search key"),
            (b"SEEN)", "unbalanced )"),
            (b"SEEN DRAFT)", "unbalanced )"),
            (b"SEEN  DRAFT", "expected a search key"),
            (b"MODSEQ", "missing the argument of MODSEQ"),
            (b"MODSEQ 9223372036854775808", "out of range"),
            (b'MODSEQ "/flags/\\\\Seen" 5', "entry type must be"),
            (b'MODSEQ "/flags/\\\\Seen"', "missing an entry type"),
            (b'MODSEQ "/flags/\\\\Seen" all', "missing a mod-sequence"),
            (b'MODSEQ "/flags/\\\\Seen" any 5', "entry type must be"),
            (b'MODSEQ "/other/x" all 5', "entry name must be"),
            (b'MODSEQ "/flags/\\\\Recent" all 5', "cannot be stored"),
            (b'MODSEQ "/flags/a b" all 5', "bad flag"),
            (b"SUBJECT {2}", "missing"),
        ):
            e = self.assertRaises(ParseError, key, criteria)
            self.assertIn(reason, str(e), criteria)

    def test_nesting_is_bounded(self):
        self.assertEqual(key(b"NOT " * 60 + b"ALL"), key(b"NOT " * 58 + b"NOT NOT ALL"))
        e = self.assertRaises(ParseError, key, b"NOT " * 100 + b"ALL")
        self.assertIn("nested too deeply", str(e))
        e = self.assertRaises(ParseError, key, b"(" * 1000 + b"ALL" + b")" * 1000)
        self.assertIn("nested too deeply", str(e))

    def test_long_sequence_set_key(self):
        text = b",".join(b"%d" % n for n in range(1, 200_001, 2))
        got = key(b"UID " + text)
        self.assertEqual(len(got.set.items), 100_000)
        self.assertTrue(matches(got, Message(uid=199_999, max_uid=199_999)))
        self.assertFalse(matches(got, Message(uid=199_998, max_uid=199_999)))


class CharsetTests(SynchronousTestCase):
    def test_no_charset(self):
        self.assertEqual(parse_search(b"ALL"), Search(None, All()))

    def test_utf8_and_us_ascii_any_case(self):
        for name, expected in (
            (b"UTF-8", "UTF-8"),
            (b"utf-8", "UTF-8"),
            (b'"Utf-8"', "UTF-8"),
            (b"US-ASCII", "US-ASCII"),
            (b"us-ascii", "US-ASCII"),
        ):
            self.assertEqual(parse_search(b"CHARSET " + name + b" ALL").charset, expected)

    def test_other_charsets_are_badcharset(self):
        for name in (b"ISO-8859-1", b"UTF8", b'"KOI8-R"', b"{5}\r\nUTF-7"):
            pieces = (
                [b"CHARSET " + name]
                if b"\r\n" not in name
                else [b"CHARSET {5}", Literal(b"UTF-7"), b" ALL"]
            )
            e = self.assertRaises(BadCharset, parse_search, pieces)
            self.assertEqual(e.supported, ("UTF-8", "US-ASCII"))
        e = self.assertRaises(BadCharset, parse_command, b"t9 UID SEARCH CHARSET big5 ALL")
        self.assertEqual((e.tag, e.charset, str(e)), (b"t9", "big5", "unsupported charset big5"))

    def test_charset_needs_a_key(self):
        e = self.assertRaises(ParseError, parse_search, b"CHARSET UTF-8")
        self.assertIn("missing a search key", str(e))

    def test_utf8_literal_in_a_command(self):
        command = parse_command(
            [b"a SEARCH CHARSET UTF-8 TEXT {6}", Literal("Straße".encode()[:6]), b""]
        )
        self.assertEqual(command.args, Search("UTF-8", Contains("text", "Straß")))

    def test_invalid_utf8_is_a_parse_error(self):
        e = self.assertRaises(ParseError, parse_search, [b"SUBJECT {1}", Literal(b"\xff"), b""])
        self.assertIn("not UTF-8", str(e))


class MatchTests(SynchronousTestCase):
    def check(self, criteria: bytes, expected: bool, **changes) -> None:
        msg = Message(**changes)
        self.assertEqual(matches(key(criteria), msg), expected, (criteria, changes))

    def test_all(self):
        self.check(b"ALL", True)

    def test_system_flags(self):
        for name, flag in (
            (b"ANSWERED", "\\Answered"),
            (b"DELETED", "\\Deleted"),
            (b"DRAFT", "\\Draft"),
            (b"FLAGGED", "\\Flagged"),
            (b"SEEN", "\\Seen"),
        ):
            self.check(name, True, flags=frozenset({flag}))
            self.check(name, False, flags=frozenset({"x"}))
            self.check(b"UN" + name, False, flags=frozenset({flag}))
            self.check(b"UN" + name, True, flags=frozenset())

    def test_keywords_case_insensitive(self):
        self.check(b"KEYWORD $forwarded", True)
        self.check(b"KEYWORD $Junk", False)
        self.check(b"UNKEYWORD $FORWARDED", False)
        self.check(b"UNKEYWORD $Junk", True)

    def test_keyword_never_matches_a_system_flag_spelling(self):
        self.check(b"KEYWORD Seen", False)

    def test_recent_new_old(self):
        self.check(b"RECENT", True, recent=True)
        self.check(b"RECENT", False)
        self.check(b"NEW", True, recent=True, flags=frozenset())
        self.check(b"NEW", False, recent=True)  # \Seen
        self.check(b"NEW", False, flags=frozenset())
        self.check(b"OLD", True)
        self.check(b"OLD", False, recent=True)

    def test_address_and_subject_substrings_case_insensitive(self):
        self.check(b"FROM ALICE@EXAMPLE", True)
        self.check(b'FROM "alice example"', True)
        self.check(b"FROM bob", False)
        self.check(b"TO BOB@", True)
        self.check(b"CC carol", True)
        self.check(b"BCC carol", False)  # no Bcc field
        self.check(b"SUBJECT STRASSE", True)  # str.casefold: ß is ss
        self.check(b"SUBJECT meeting", False)

    def test_empty_string_matches_messages_with_the_field(self):
        self.check(b'HEADER X-Empty ""', True)
        self.check(b'HEADER x-empty ""', True)
        self.check(b'HEADER X-Missing ""', False)
        self.check(b'BCC ""', False)
        self.check(b'SUBJECT ""', True)

    def test_header_values_get_lower_case_names(self):
        msg = Message()
        matches(key(b"HEADER X-EMPTY foo"), msg)
        self.assertEqual(msg.calls, [("header_values", "x-empty")])

    def test_body_and_text(self):
        self.check(b"BODY WORLD", True)
        self.check(b"BODY Alice", False)
        self.check(b"TEXT Alice", True)
        self.check(b"TEXT noon.", True)
        self.check(b"TEXT midnight", False)

    def test_needles_reach_the_message_casefolded(self):
        msg = Message()
        criteria = [b"OR BODY {6}", Literal("STRAßE".encode()[:6]), b' TEXT "Hello"']
        self.assertTrue(matches(key(criteria), msg))
        self.assertEqual(msg.calls, [("body_contains", "strass"), ("text_contains", "hello")])

    def test_internal_dates_are_days_in_utc(self):
        # 2024-03-10 23:30 -0500 is 2024-03-11 04:30 UTC
        self.check(b"ON 11-Mar-2024", True)
        self.check(b"ON 10-Mar-2024", False)
        self.check(b"BEFORE 11-Mar-2024", False)
        self.check(b"BEFORE 12-Mar-2024", True)
        self.check(b"SINCE 11-Mar-2024", True)
        self.check(b"SINCE 12-Mar-2024", False)

    def test_sent_dates(self):
        self.check(b"SENTON 9-Mar-2024", True)
        self.check(b"SENTON 10-Mar-2024", False)
        self.check(b"SENTBEFORE 9-Mar-2024", False)
        self.check(b"SENTBEFORE 10-Mar-2024", True)
        self.check(b"SENTSINCE 9-Mar-2024", True)
        self.check(b"SENTSINCE 10-Mar-2024", False)

    def test_sent_date_falls_back_to_the_internal_date(self):
        self.check(b"SENTON 11-Mar-2024", True, date=None)
        self.check(b"SENTON 9-Mar-2024", False, date=None)

    def test_sizes(self):
        self.check(b"LARGER 999", True)
        self.check(b"LARGER 1000", False)
        self.check(b"SMALLER 1000", False)
        self.check(b"SMALLER 1001", True)

    def test_sequence_numbers(self):
        self.check(b"1:3", True)
        self.check(b"4:*", False)
        self.check(b"*", True, seq=10)
        self.check(b"*", False)
        self.check(b"12:*", True, seq=10)  # n:* includes the largest
        self.check(b"2,4,6", False)

    def test_uids(self):
        self.check(b"UID 103", True)
        self.check(b"UID 1:102,104:*", False)
        self.check(b"UID *", True, uid=110)
        self.check(b"UID 500:*", True, uid=110)
        self.check(b"UID 1:4294967295", True)

    def test_modseq_rfc7162(self):
        self.check(b"MODSEQ 50", True)
        self.check(b"MODSEQ 51", False)
        self.check(b'MODSEQ "/flags/\\\\Seen" all 49', True)

    def test_or_not_and(self):
        self.check(b"OR DELETED SEEN", True)
        self.check(b"OR DELETED DRAFT", False)
        self.check(b"NOT OR DELETED DRAFT", True)
        self.check(b"(SEEN FROM alice)", True)
        self.check(b"SEEN FROM bob", False)
        self.check(b"OR (DELETED SEEN) (NOT SEEN KEYWORD $Forwarded)", False)
        self.check(b"OR (DELETED SEEN) (SEEN NOT NOT KEYWORD $Forwarded)", True)
        self.check(b"NOT (SEEN NOT 3)", True)

    def test_and_stops_at_the_first_failure(self):
        msg = Message()
        self.assertFalse(matches(key(b"DELETED BODY x TEXT y"), msg))
        self.assertEqual(msg.calls, [])

    def test_the_in_test_message_satisfies_the_protocol(self):
        msg: SearchMessage = Message()
        self.assertTrue(matches(key(b"ALL"), msg))


class NeedsTests(SynchronousTestCase):
    def test_index_only_keys_need_nothing(self):
        criteria = b"SEEN UID 1:* 1:5 LARGER 3 SINCE 1-Jan-2020 NEW KEYWORD x MODSEQ 4"
        self.assertEqual(needs(key(criteria)), set())

    def test_each_kind(self):
        self.assertEqual(needs(key(b"FROM a")), {"headers"})
        self.assertEqual(needs(key(b"HEADER X-A b")), {"headers"})
        self.assertEqual(needs(key(b"BODY a")), {"body"})
        self.assertEqual(needs(key(b"TEXT a")), {"text"})
        self.assertEqual(needs(key(b"SENTON 1-Jan-2020")), {"sent"})

    def test_nested(self):
        criteria = b"OR NOT (SUBJECT a BODY b) (SEEN OR TEXT c SENTBEFORE 1-Jan-2020)"
        self.assertEqual(needs(key(criteria)), {"headers", "body", "text", "sent"})


class UsesModseqTests(SynchronousTestCase):
    def test_only_with_a_modseq_key_anywhere(self):
        self.assertFalse(uses_modseq(key(b"SEEN OR FROM a UID 1:*")))
        self.assertTrue(uses_modseq(key(b"MODSEQ 1")))
        self.assertTrue(uses_modseq(key(b"SEEN OR FROM a NOT (DRAFT MODSEQ 7)")))
