"""The IMAP command parser, sequence sets and wire formatting (RFC 3501 §9 and extensions)."""

from __future__ import annotations

import datetime
import time

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.imap import wire
from mailbox_appliance.imap.parser import (
    Append,
    Authenticate,
    Command,
    Copy,
    Create,
    Enable,
    Expunge,
    Fetch,
    FetchItem,
    Id,
    ListArgs,
    Literal,
    Login,
    MailboxArgs,
    NoArgs,
    ParseError,
    QuotaRoot,
    Rename,
    Section,
    Select,
    SetQuota,
    Status,
    Store,
    literal_at_end,
    parse_command,
)
from mailbox_appliance.imap.search import BadCharset, HasFlag, Header, Not, Search
from mailbox_appliance.imap.sequence import SequenceSet, format_set

UTC = datetime.UTC


def zone(hours: int, minutes: int = 0) -> datetime.timezone:
    sign = -1 if hours < 0 else 1
    return datetime.timezone(sign * datetime.timedelta(hours=abs(hours), minutes=minutes))


def pieces_of(data: bytes) -> list[bytes | Literal]:
    """Split what a client sends (CRLF lines and literals) the way the protocol does."""
    pieces: list[bytes | Literal] = []
    while True:
        line, _, data = data.partition(b"\r\n")
        pieces.append(line)
        spec = literal_at_end(line)
        if spec is None:
            return pieces
        pieces.append(Literal(data[: spec[0]]))
        data = data[spec[0] :]


class ParserTestCase(SynchronousTestCase):
    def parse(self, command: bytes | list) -> Command:
        if isinstance(command, bytes) and b"\r\n" in command:
            command = pieces_of(command)
        return parse_command(command)

    def args(self, command: bytes | list) -> object:
        return self.parse(command).args

    def bad(self, command: bytes | list, reason: str | None = None) -> ParseError:
        e = self.assertRaises(ParseError, self.parse, command)
        self.assertTrue(str(e), "a ParseError needs a human-readable reason")
        if reason is not None:
            self.assertIn(reason, str(e))
        return e


class LiteralAtEndTests(SynchronousTestCase):
    def test_synchronizing_literal(self):
        self.assertEqual(literal_at_end(b"a LOGIN {5}"), (5, False))

    def test_non_synchronizing_literal_rfc7888(self):
        self.assertEqual(literal_at_end(b"a LOGIN {12+}"), (12, True))

    def test_no_literal(self):
        self.assertIsNone(literal_at_end(b"a LOGIN alice secret"))
        self.assertIsNone(literal_at_end(b"a LOGIN {5}x"))
        self.assertIsNone(literal_at_end(b"a LOGIN {-5}"))
        self.assertIsNone(literal_at_end(b"a LOGIN {5++}"))

    def test_largest_size_is_number64(self):
        self.assertEqual(literal_at_end(b"{9223372036854775807}"), (2**63 - 1, False))

    def test_larger_size_is_a_parse_error(self):
        self.assertRaises(ParseError, literal_at_end, b"a APPEND x {9223372036854775808}")
        self.assertRaises(ParseError, literal_at_end, b"a APPEND x {99999999999999999999+}")


class TagAndNameTests(ParserTestCase):
    def test_tag_and_name(self):
        self.assertEqual(self.parse(b"A001 noop"), Command("A001", "NOOP", NoArgs(), False))

    def test_tag_may_hold_resp_specials_and_punctuation(self):
        self.assertEqual(self.parse(b"a]b.$-! NOOP").tag, "a]b.$-!")

    def test_tag_with_plus_is_unreadable(self):
        self.assertIsNone(self.bad(b"a+1 NOOP", "invalid tag").tag)

    def test_tags_with_wildcards_quotes_or_parens_are_unreadable(self):
        for line in (b"a* NOOP", b"a% NOOP", b'a" NOOP', b"a( NOOP", b"a{ NOOP", b"a\\ NOOP"):
            self.assertIsNone(self.bad(line, "invalid tag").tag, line)

    def test_empty_and_blank_lines(self):
        self.assertIsNone(self.bad(b"", "invalid tag").tag)
        self.assertIsNone(self.bad(b" NOOP", "invalid tag").tag)
        self.assertIsNone(self.bad([Literal(b"x")], "empty command").tag)

    def test_missing_command_keeps_the_tag(self):
        self.assertEqual(self.bad(b"a1", "missing command").tag, b"a1")
        self.assertEqual(self.bad(b"a1 ").tag, b"a1")

    def test_unknown_command(self):
        e = self.bad(b"a1 XYZZY", "unknown command")
        self.assertEqual(e.tag, b"a1")
        self.assertEqual(str(e), "unknown command")

    def test_two_spaces_is_bad(self):
        self.assertEqual(self.bad(b"a1  NOOP").tag, b"a1")

    def test_trailing_space_is_bad(self):
        self.bad(b"a1 NOOP ", "unexpected extra arguments")

    def test_uid_needs_one_of_its_commands(self):
        self.assertEqual(self.bad(b"a UID NOOP", "UID needs").tag, b"a")
        self.bad(b"a UID", "missing")
        self.bad(b"a UID UID FETCH 1 FLAGS", "UID needs")


class NoArgumentCommandTests(ParserTestCase):
    NAMES = ("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE")
    NAMES += ("NAMESPACE",)

    def test_each_parses_without_arguments(self):
        for name in self.NAMES:
            command = self.parse(b"t " + name.lower().encode())
            self.assertEqual(command, Command("t", name, NoArgs(), False))

    def test_each_refuses_arguments(self):
        for name in self.NAMES:
            e = self.bad(b"t7 " + name.encode() + b" extra", "unexpected extra arguments")
            self.assertEqual(e.tag, b"t7")

    def test_expunge(self):
        self.assertEqual(self.parse(b"a EXPUNGE"), Command("a", "EXPUNGE", Expunge(None)))
        self.bad(b"a EXPUNGE 1:3", "unexpected extra arguments")

    def test_uid_expunge_rfc4315(self):
        command = self.parse(b"a UID EXPUNGE 3000:3002,3005")
        self.assertEqual(command.name, "EXPUNGE")
        self.assertTrue(command.uid)
        self.assertEqual(command.args, Expunge(SequenceSet([(3000, 3002), (3005, 3005)])))
        self.bad(b"a UID EXPUNGE", "missing a sequence set")


class LoginTests(ParserTestCase):
    def test_atoms(self):
        self.assertEqual(self.args(b"a LOGIN alice s3cr3t"), Login("alice", "s3cr3t"))

    def test_quoted_strings_with_escapes(self):
        args = self.args(b'a LOGIN "alice@example.org" "a \\"b\\" \\\\c"')
        self.assertEqual(args, Login("alice@example.org", 'a "b" \\c'))

    def test_atom_may_contain_close_bracket(self):
        self.assertEqual(self.args(b"a LOGIN a]b c"), Login("a]b", "c"))

    def test_synchronizing_literals(self):
        pieces = [b"a LOGIN {5}", Literal(b"alice"), b" {6}", Literal(b"p w\r\nd"), b""]
        self.assertEqual(self.args(pieces), Login("alice", "p w\r\nd"))

    def test_non_synchronizing_literals(self):
        args = self.args(b"a LOGIN {5+}\r\nalice {11+}\r\nm\xc3\xb6t\xc3\xb6rhead")
        self.assertEqual(args, Login("alice", "mötörhead"))

    def test_empty_quoted_and_literal(self):
        self.assertEqual(self.args(b'a LOGIN "" {0}\r\n'), Login("", ""))

    def test_eight_bit_in_quoted_string_is_refused(self):
        self.assertEqual(self.bad('a LOGIN alice "mötör"'.encode(), "8-bit").tag, b"a")

    def test_cr_in_quoted_string_is_refused(self):
        self.bad(b'a LOGIN alice "x\ry"', "quoted string")

    def test_bad_escape_is_refused(self):
        self.bad(b'a LOGIN alice "x\\y"', "quoted string")

    def test_unterminated_quote(self):
        self.bad(b'a LOGIN alice "xy', "quoted string")

    def test_nul_in_literal_is_refused(self):
        self.bad([b"a LOGIN alice {3}", Literal(b"a\x00b"), b""], "bad literal")

    def test_invalid_utf8_is_refused(self):
        self.bad([b"a LOGIN alice {2}", Literal(b"\xff\xfe"), b""], "not UTF-8")

    def test_missing_password(self):
        self.assertEqual(self.bad(b"a LOGIN alice", "missing a password").tag, b"a")

    def test_too_many_arguments(self):
        self.bad(b"a LOGIN alice secret more", "unexpected extra arguments")

    def test_literal_size_must_match(self):
        self.bad([b"a LOGIN {5}", Literal(b"alic"), b" x"], "wrong size")

    def test_literal_piece_missing(self):
        self.bad([b"a LOGIN {5}"], "missing")
        self.bad([b"a LOGIN {5}", b" x"], "missing")

    def test_literal_not_at_end_of_line(self):
        self.bad(b"a LOGIN {5} x", "expected a literal")

    def test_unexpected_literal_after_the_command(self):
        self.bad([b"a LOGIN alice secret", Literal(b"x"), b""], "unexpected extra arguments")


class AuthenticateTests(ParserTestCase):
    def test_mechanism_only(self):
        self.assertEqual(self.args(b"a AUTHENTICATE plain"), Authenticate("PLAIN", None))

    def test_sasl_ir_initial_response_rfc4959(self):
        args = self.args(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
        self.assertEqual(args, Authenticate("PLAIN", b"AGFsaWNlAHNlY3JldA=="))

    def test_empty_initial_response(self):
        self.assertEqual(self.args(b"a AUTHENTICATE EXTERNAL ="), Authenticate("EXTERNAL", b"="))

    def test_invalid_base64_is_bad(self):
        self.bad(b"a AUTHENTICATE PLAIN abc", "base64")
        self.bad(b"a AUTHENTICATE PLAIN ab!d", "expected base64")
        self.bad(b"a AUTHENTICATE PLAIN abcd=", "unexpected extra arguments")

    def test_missing_mechanism(self):
        self.bad(b"a AUTHENTICATE", "missing a SASL mechanism")


class MailboxNameTests(ParserTestCase):
    def mailbox(self, raw: bytes) -> str:
        return self.args(b"a DELETE " + raw).mailbox

    def test_inbox_any_case(self):
        for raw in (b"inbox", b"InBoX", b'"INBOX"', b"{5}\r\niNbOx"):
            self.assertEqual(self.mailbox(raw), "INBOX")

    def test_inbox_as_first_level(self):
        self.assertEqual(self.mailbox(b"inbox/Foo/inbox"), "INBOX/Foo/inbox")

    def test_other_names_keep_their_case(self):
        self.assertEqual(self.mailbox(b"Inboxes"), "Inboxes")
        self.assertEqual(self.mailbox(b"Archive/inbox"), "Archive/inbox")

    def test_modified_utf7_rfc3501_5_1_3(self):
        self.assertEqual(
            self.mailbox(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"), "~peter/mail/台北/日本語"
        )
        self.assertEqual(self.mailbox(b'"Tom &- Jerry"'), "Tom & Jerry")
        self.assertEqual(self.mailbox(b"&2D3eAA-"), "\U0001f600")

    def test_non_canonical_modified_utf7_is_refused(self):
        for raw in (b"&AGE-", b"&ZeVnLIqe", b"&Jjo-&Jjo-", b"&AOl-", b"&&-", b"a&b"):
            self.assertEqual(self.bad(b"a DELETE " + raw, "modified UTF-7").tag, b"a", raw)

    def test_eight_bit_names_are_refused(self):
        self.bad([b"a DELETE {5}", Literal("café".encode()), b""], "printable US-ASCII")

    def test_control_characters_are_refused(self):
        self.bad([b"a DELETE {3}", Literal(b"a\tb"), b""], "printable US-ASCII")

    def test_wildcards_are_not_atom_chars(self):
        self.bad(b"a DELETE foo*", "unexpected extra arguments")
        self.assertEqual(self.mailbox(b'"foo*"'), "foo*")


class MailboxCommandTests(ParserTestCase):
    def test_select_and_examine(self):
        self.assertEqual(self.parse(b"a SELECT inbox"), Command("a", "SELECT", Select("INBOX")))
        self.assertEqual(self.parse(b"a EXAMINE Sent").args, Select("Sent"))

    def test_select_condstore_rfc7162(self):
        self.assertEqual(self.args(b"a SELECT INBOX (condstore)"), Select("INBOX", True))
        self.assertEqual(self.args(b"a EXAMINE x (CONDSTORE)"), Select("x", True))

    def test_select_unknown_or_empty_parameters(self):
        self.bad(b"a SELECT INBOX (QRESYNC (1 2))", "unknown select parameter")
        self.bad(b"a SELECT INBOX ()", "empty list")
        self.bad(b"a SELECT INBOX (CONDSTORE", "missing ) after select parameters")
        self.bad(b"a SELECT INBOX (CONDSTORE CONDSTORE", "missing ) after select parameters")
        self.bad(b"a SELECT", "missing a mailbox name")

    def test_create(self):
        self.assertEqual(self.args(b"a CREATE Projects/"), Create("Projects/"))

    def test_create_special_use_rfc6154(self):
        args = self.args(b"a CREATE MySent (USE (\\sent \\ARCHIVE \\Sent))")
        self.assertEqual(args, Create("MySent", ("\\Sent", "\\Archive")))

    def test_create_unknown_use_attr_is_kept_for_a_no(self):
        self.assertEqual(self.args(b"a CREATE x (USE (\\Spam))"), Create("x", ("\\Spam",)))

    def test_create_bad_parameters(self):
        self.bad(b"a CREATE x (FOO (\\Sent))", "unknown create parameter")
        self.bad(b"a CREATE x (USE \\Sent)", "( before")
        self.bad(b"a CREATE x (USE (Sent))", "special-use attribute")

    def test_delete_subscribe_unsubscribe_getquotaroot(self):
        for name in ("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"):
            command = self.parse(b"a " + name.encode() + b' "Old Stuff"')
            self.assertEqual(command, Command("a", name, MailboxArgs("Old Stuff")))
            self.bad(b"a " + name.encode() + b" x y", "unexpected extra arguments")

    def test_rename(self):
        self.assertEqual(self.args(b"a RENAME inbox/a {1}\r\nb"), Rename("INBOX/a", "b"))
        self.bad(b"a RENAME a", "missing a mailbox name")

    def test_status(self):
        args = self.args(b"a STATUS blurdybloop (UIDNEXT messages UIDNEXT)")
        self.assertEqual(args, Status("blurdybloop", ("UIDNEXT", "MESSAGES")))

    def test_status_every_item(self):
        names = "MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE DELETED"
        args = self.args(f"a STATUS INBOX ({names} DELETED-STORAGE)".encode())
        self.assertEqual(args.items, tuple(names.split()) + ("DELETED-STORAGE",))

    def test_status_bad(self):
        self.bad(b"a STATUS INBOX (MESSAGES BOGUS)", "unknown status item BOGUS")
        self.bad(b"a STATUS INBOX ()", "empty list")
        self.bad(b"a STATUS INBOX MESSAGES", "( before")

    def test_getquota_and_setquota_rfc9208(self):
        self.assertEqual(self.parse(b'a GETQUOTA ""'), Command("a", "GETQUOTA", QuotaRoot("")))
        args = self.args(b'a SETQUOTA "User quota" (STORAGE 512 message 9223372036854775807)')
        self.assertEqual(args, SetQuota("User quota", (("STORAGE", 512), ("MESSAGE", 2**63 - 1))))
        self.assertEqual(self.args(b"a SETQUOTA x ()"), SetQuota("x", ()))
        self.bad(b"a SETQUOTA x (STORAGE)", "missing a resource limit")
        self.bad(b"a SETQUOTA x (STORAGE 9223372036854775808)", "out of range")


class ListTests(ParserTestCase):
    def test_basic(self):
        command = self.parse(b'a LIST "" %')
        self.assertEqual(command, Command("a", "LIST", ListArgs("", ("%",))))

    def test_hierarchy_delimiter_request(self):
        self.assertEqual(self.args(b'a LIST "" ""'), ListArgs("", ("",)))

    def test_reference_and_wildcards(self):
        args = self.args(b"a LIST ~/Mail/ foo*/%]x")
        self.assertEqual(args, ListArgs("~/Mail/", ("foo*/%]x",)))

    def test_patterns_are_decoded_and_inbox_normalised(self):
        self.assertEqual(self.args(b'a LIST "" inbox/&ZeVnLIqe-*').patterns, ("INBOX/日本語*",))
        self.assertEqual(self.args(b'a LIST "" {3}\r\na*b').patterns, ("a*b",))

    def test_special_use_rfc6154(self):
        args = self.args(b'a LIST (SPECIAL-USE) "" "*" RETURN (special-use)')
        self.assertEqual(
            args, ListArgs("", ("*",), frozenset({"SPECIAL-USE"}), frozenset({"SPECIAL-USE"}))
        )
        args = self.args(b'a LIST "" (INBOX Sent/%) RETURN ()')
        self.assertEqual(args, ListArgs("", ("INBOX", "Sent/%")))

    def test_unsupported_options(self):
        self.bad(b'a LIST (SUBSCRIBED) "" *', "unsupported LIST selection option SUBSCRIBED")
        self.bad(b'a LIST "" * RETURN (CHILDREN)', "unsupported LIST return option CHILDREN")
        self.bad(b'a LIST "" * (SPECIAL-USE)', "RETURN")
        self.bad(b'a LIST "" ()', "empty list")

    def test_missing_pattern(self):
        self.bad(b'a LIST ""', "missing a mailbox pattern")

    def test_lsub(self):
        self.assertEqual(
            self.parse(b'a LSUB "news." "comp.mail.*"').args, ListArgs("news.", ("comp.mail.*",))
        )
        self.bad(b'a LSUB (SPECIAL-USE) "" *', "expected a mailbox name")


class AppendTests(ParserTestCase):
    def test_message_only(self):
        args = self.args(b"a APPEND saved-messages {5}\r\nHello")
        self.assertEqual(args, Append("saved-messages", (), None, Literal(b"Hello")))

    def test_flags_and_date_time(self):
        args = self.args(
            b'a APPEND INBOX (\\seen $Label1 \\Seen) "05-Jul-1996 02:44:25 -0700" {3+}\r\nabc'
        )
        date = datetime.datetime(1996, 7, 5, 2, 44, 25, tzinfo=zone(-7))
        self.assertEqual(args, Append("INBOX", ("\\Seen", "$Label1"), date, Literal(b"abc")))
        self.assertEqual(args.date.astimezone(UTC).hour, 9)

    def test_date_with_space_padded_day(self):
        args = self.args(b'a APPEND x " 5-jul-1996 23:59:59 +0130" {0}\r\n')
        expected = datetime.datetime(1996, 7, 5, 23, 59, 59, tzinfo=zone(1, 30))
        self.assertEqual(args.date, expected)
        self.assertEqual(args.flags, ())

    def test_empty_flag_list(self):
        self.assertEqual(self.args(b"a APPEND x () {1}\r\nm").flags, ())

    def test_streamed_message_is_carried_through(self):
        ref = object()
        message = Literal(None, size=10_000_000, ref=ref)
        args = self.args([b"a APPEND INBOX {10000000}", message, b""])
        self.assertIs(args.message, message)
        self.assertIs(args.message.ref, ref)
        self.assertIsNone(args.message.data)

    def test_streamed_message_size_must_match_the_spec(self):
        self.bad([b"a APPEND INBOX {10}", Literal(None, size=11), b""], "wrong size")

    def test_bad_date_times(self):
        for date in (
            b'"5-Jul-1996 02:44:25 -0700"',  # date-day-fixed needs 2 characters
            b'"31-Feb-1996 02:44:25 -0700"',
            b'"05-Jux-1996 02:44:25 -0700"',
            b'"05-Jul-1996 24:00:00 -0700"',
            b'"05-Jul-1996 02:44:25 -0760"',
            b'"05-Jul-1996 02:44:25"',
            b'"05-Jul-1996"',
        ):
            self.assertEqual(self.bad(b"a APPEND x " + date + b" {1}\r\nm").tag, b"a", date)

    def test_recent_and_unknown_system_flags_are_refused(self):
        self.bad(b"a APPEND x (\\Recent) {1}\r\nm", "cannot be stored")
        self.bad(b"a APPEND x (\\Important) {1}\r\nm", "cannot be stored")

    def test_message_must_be_a_literal(self):
        self.bad(b'a APPEND x "Hello"', "expected a date-time")
        self.bad(b"a APPEND x Hello", "expected a literal")
        self.bad(b"a APPEND x", "missing")

    def test_nothing_after_the_message(self):
        self.bad(b"a APPEND x {1}\r\nm (\\Seen) {1}\r\nn", "unexpected extra arguments")

    def test_flags_after_date_are_refused(self):
        self.bad(b'a APPEND x "05-Jul-1996 02:44:25 -0700" (\\Seen) {1}\r\nm', "literal")


def item(name, part=(), text=None, fields=(), partial=None, peek=False, section=True):
    return FetchItem(name, Section(part, text, fields) if section else None, partial, peek)


class FetchTests(ParserTestCase):
    def items(self, spec: bytes) -> tuple[FetchItem, ...]:
        return self.args(b"a FETCH 1 " + spec).items

    def test_every_simple_item(self):
        names = "ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT"
        names += " BODY BODYSTRUCTURE UID MODSEQ"
        items = self.items(f"({names.lower()})".encode())
        self.assertEqual(items, tuple(FetchItem(n) for n in names.split()))
        self.assertEqual([i.label for i in items], names.split())

    def test_single_item_without_parentheses(self):
        self.assertEqual(self.items(b"flags"), (FetchItem("FLAGS"),))
        self.assertEqual(self.items(b"BODY[]"), (item("BODY"),))

    def test_macros_rfc3501_6_4_5(self):
        fast = tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE"))
        self.assertEqual(self.items(b"FAST"), fast)
        self.assertEqual(self.items(b"all"), fast + (FetchItem("ENVELOPE"),))
        self.assertEqual(self.items(b"FULL"), fast + (FetchItem("ENVELOPE"), FetchItem("BODY")))

    def test_macros_are_not_items_of_a_list(self):
        self.bad(b"a FETCH 1 (ALL)", "unknown fetch item ALL")
        self.bad(b"a FETCH 1 (FLAGS FAST)", "unknown fetch item FAST")

    def test_sections(self):
        cases = {
            b"BODY[]": (item("BODY"), "BODY[]"),
            b"BODY[HEADER]": (item("BODY", text="HEADER"), "BODY[HEADER]"),
            b"BODY[text]": (item("BODY", text="TEXT"), "BODY[TEXT]"),
            b"BODY[1]": (item("BODY", (1,)), "BODY[1]"),
            b"BODY[1.2.3]": (item("BODY", (1, 2, 3)), "BODY[1.2.3]"),
            b"BODY[4.2.mime]": (item("BODY", (4, 2), "MIME"), "BODY[4.2.MIME]"),
            b"BODY[3.HEADER]": (item("BODY", (3,), "HEADER"), "BODY[3.HEADER]"),
            b"BODY[3.TEXT]": (item("BODY", (3,), "TEXT"), "BODY[3.TEXT]"),
            b"BODY[HEADER.FIELDS (date From)]": (
                item("BODY", text="HEADER.FIELDS", fields=("DATE", "FROM")),
                "BODY[HEADER.FIELDS (DATE FROM)]",
            ),
            b'BODY[2.HEADER.FIELDS.NOT ("X-Spam" {4}\r\nx-())]': (
                item("BODY", (2,), "HEADER.FIELDS.NOT", ("X-SPAM", "X-()")),
                'BODY[2.HEADER.FIELDS.NOT (X-SPAM "X-()")]',
            ),
        }
        for spec, (expected, label) in cases.items():
            (got,) = self.args(b"a FETCH 1 " + spec).items
            self.assertEqual(got, expected, spec)
            self.assertEqual(got.label, label, spec)

    def test_peek_and_partial_echo_only_the_origin_rfc3501_7_4_2(self):
        (got,) = self.items(b"BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.2048>")
        expected = item("BODY", (), "HEADER.FIELDS", ("FROM", "TO"), (0, 2048), True)
        self.assertEqual(got, expected)
        self.assertEqual(got.label, "BODY[HEADER.FIELDS (FROM TO)]<0>")
        (got,) = self.items(b"BODY[1]<100.10>")
        self.assertEqual((got.partial, got.peek, got.label), ((100, 10), False, "BODY[1]<100>"))

    def test_binary_rfc3516(self):
        items = self.items(b"(BINARY[1.2] BINARY.PEEK[]<5.10> BINARY.SIZE[3])")
        self.assertEqual(
            items,
            (
                item("BINARY", (1, 2)),
                item("BINARY", (), partial=(5, 10), peek=True),
                item("BINARY.SIZE", (3,)),
            ),
        )
        self.assertEqual([i.label for i in items], ["BINARY[1.2]", "BINARY[]<5>", "BINARY.SIZE[3]"])

    def test_bad_items(self):
        for spec, reason in (
            (b"(BODY[MIME])", "bad section MIME"),
            (b"(BODY[1.])", "bad section after part number"),
            (b"(BODY[0])", "expected ] after section"),
            (b"(BODY[01])", "expected ] after section"),
            (b"(BODY[1.FOO])", "bad section FOO"),
            (b"(BODY[HEADER.FIELDS])", "missing header field names"),
            (b"(BODY[HEADER.FIELDS ()])", "empty list"),
            (b"(BODY[HEADER.FIELDS (a:b)])", "bad header field name"),
            (b"(BODY[TEXT)", "expected ] after section"),
            (b"(BODY.PEEK)", "unknown fetch item BODY.PEEK"),
            (b"(BINARY)", "unknown fetch item BINARY"),
            (b"(BINARY[HEADER])", "expected ] after section"),
            (b"(BINARY.SIZE[1]<0.1>)", "expected SP"),
            (b"(BODYSTRUCTURE[1])", "unknown fetch item"),
            (b"(BODY[]<0.0>)", "expected SP"),
            (b"(BODY[]<1>)", "expected SP"),
            (b"(FLAGS  UID)", "expected a fetch item"),
            (b"(FLAGS", "missing ) after fetch items"),
            (b"()", "empty list"),
            (b"FOO", "unknown fetch item FOO"),
        ):
            self.assertEqual(self.bad(b"t FETCH 1 " + spec, reason).tag, b"t", spec)

    def test_duplicates_are_dropped(self):
        self.assertEqual(self.items(b"(FLAGS UID flags)"), (FetchItem("FLAGS"), FetchItem("UID")))

    def test_uid_fetch_adds_uid(self):
        command = self.parse(b"a UID FETCH 4827313:4828442 FLAGS")
        self.assertEqual((command.name, command.uid), ("FETCH", True))
        self.assertEqual(command.args.items, (FetchItem("FLAGS"), FetchItem("UID")))
        self.assertEqual(
            self.args(b"a UID FETCH 1 (UID FLAGS)").items, (FetchItem("UID"), FetchItem("FLAGS"))
        )

    def test_changedsince_adds_modseq_rfc7162(self):
        args = self.args(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)")
        self.assertEqual(
            args,
            Fetch(SequenceSet([(1, None)]), (FetchItem("FLAGS"), FetchItem("MODSEQ")), 12345),
        )

    def test_vanished_rfc7162_3_2_6(self):
        args = self.args(b"a UID FETCH 300:500 FLAGS (CHANGEDSINCE 1 VANISHED)")
        self.assertEqual((args.changed_since, args.vanished), (1, True))
        self.bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "VANISHED needs UID FETCH")
        self.bad(b"a UID FETCH 1 FLAGS (VANISHED)", "VANISHED needs UID FETCH and CHANGEDSINCE")

    def test_bad_modifiers(self):
        self.bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "repeated fetch modifier")
        self.bad(b"a FETCH 1 FLAGS (CHANGEDSINCE)", "missing a mod-sequence")
        self.bad(b"a FETCH 1 FLAGS (CHANGEDSINCE x)", "expected a mod-sequence")
        self.bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", "out of range")
        self.bad(b"a FETCH 1 FLAGS (FOO 1)", "unknown fetch modifier FOO")
        self.bad(b"a FETCH 1 FLAGS ()", "empty list")

    def test_sequence_set_errors(self):
        self.bad(b"a FETCH 0 FLAGS", "invalid sequence set")
        self.bad(b"a FETCH 1:4294967296 FLAGS", "out of range")
        self.bad(b"a FETCH FLAGS", "expected a sequence set")
        self.bad(b"a FETCH 1", "missing fetch items")


class StoreTests(ParserTestCase):
    def test_forms(self):
        seq = SequenceSet([(2, 4)])
        cases = {
            b"FLAGS (\\Deleted)": Store(seq, "replace", False, ("\\Deleted",)),
            b"+FLAGS (\\deleted foo)": Store(seq, "add", False, ("\\Deleted", "foo")),
            b"-flags.silent (\\SEEN)": Store(seq, "remove", True, ("\\Seen",)),
            b"FLAGS.SILENT ()": Store(seq, "replace", True, ()),
            b"+FLAGS \\Flagged $Junk \\Flagged": Store(seq, "add", False, ("\\Flagged", "$Junk")),
            b"-FLAGS \\Answered": Store(seq, "remove", False, ("\\Answered",)),
        }
        for spec, expected in cases.items():
            self.assertEqual(self.args(b"a STORE 2:4 " + spec), expected, spec)

    def test_every_system_flag_canonical(self):
        args = self.args(b"a STORE 1 FLAGS (\\answered \\FLAGGED \\deleted \\seen \\DrAfT)")
        self.assertEqual(args.flags, ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"))

    def test_unchangedsince_rfc7162(self):
        command = self.parse(
            b"a UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT \\Deleted"
        )
        self.assertTrue(command.uid)
        seq = SequenceSet([(6, 6), (4, 4), (8, 8)])
        expected = Store(seq, "add", True, ("\\Deleted",), 12121230045)
        self.assertEqual(command.args, expected)
        self.assertEqual(self.args(b"a STORE 1 (UNCHANGEDSINCE 0) FLAGS ()").unchanged_since, 0)

    def test_bad(self):
        for spec, reason in (
            (b"FLAGS (\\Recent)", "\\Recent cannot be stored"),
            (b"FLAGS \\Recent", "\\Recent cannot be stored"),
            (b"FLAGS (\\Foo)", "cannot be stored"),
            (b"FLAGS", "missing flags"),
            (b"FLAGSX (a)", "expected FLAGS"),
            (b"*FLAGS (a)", "expected FLAGS"),
            (b"FLAGS (a", "missing a flag"),
            (b"FLAGS (a) b", "unexpected extra arguments"),
            (b"FLAGS a (b)", "expected a flag"),
            (b"FLAGS (a%)", "expected SP before a flag"),
            (b"(CHANGEDSINCE 1) FLAGS (a)", "unknown store modifier"),
            (b"(UNCHANGEDSINCE) FLAGS (a)", "missing a mod-sequence"),
        ):
            self.assertEqual(self.bad(b"s STORE 1 " + spec, reason).tag, b"s", spec)


class CopyMoveTests(ParserTestCase):
    def test_copy_and_move(self):
        for name in ("COPY", "MOVE"):
            command = self.parse(b"a " + name.encode() + b" 2:4 meeting")
            self.assertEqual(command, Command("a", name, Copy(SequenceSet([(2, 4)]), "meeting")))
            command = self.parse(b"a UID " + name.encode() + b" 1,* INBOX/x")
            self.assertEqual(command.args, Copy(SequenceSet([(1, 1), (None, None)]), "INBOX/x"))
            self.assertTrue(command.uid)
            self.bad(b"a " + name.encode() + b" 1", "missing a mailbox name")
            self.bad(b"a " + name.encode() + b" x y", "expected a sequence set")


class EnableIdSearchTests(ParserTestCase):
    def test_enable_rfc5161(self):
        self.assertEqual(self.args(b"a ENABLE condstore X-Foo"), Enable(("CONDSTORE", "X-FOO")))
        self.bad(b"a ENABLE", "missing a capability")

    def test_id_nil_rfc2971(self):
        self.assertEqual(self.args(b"a ID nil"), Id(None))

    def test_id_params(self):
        args = self.args(b'a ID ("name" "sodr" "version" "19.34" "vendor" NIL)')
        self.assertEqual(args, Id((("name", "sodr"), ("version", "19.34"), ("vendor", None))))
        self.assertEqual(self.args(b"a ID ()"), Id(()))
        self.assertEqual(self.args(b'a ID ({4}\r\nname "x")'), Id((("name", "x"),)))

    def test_id_bad(self):
        self.bad(b'a ID ("name")', "missing an ID value")
        self.bad(b'a ID (name "x")', "expected an ID field")
        self.bad(b"a ID", "missing ID parameters")
        self.bad(b'a ID ("' + b"x" * 31 + b'" "v")', "too long")
        pairs = b" ".join(b'"f%d" "v"' % i for i in range(31))
        self.bad(b"a ID (" + pairs + b")", "more than 30")

    def test_search_through_the_parser(self):
        command = self.parse(b"a UID SEARCH UNSEEN FROM {5}\r\nSmith")
        self.assertEqual((command.name, command.uid), ("SEARCH", True))
        key = (Not(HasFlag("\\Seen")), Header("from", "Smith"))
        self.assertEqual(command.args.charset, None)
        self.assertEqual(command.args.key.keys, key)

    def test_search_charset(self):
        self.assertEqual(self.args(b"a SEARCH CHARSET us-ascii ALL").charset, "US-ASCII")
        self.assertIsInstance(self.args(b'a SEARCH CHARSET "UTF-8" ALL'), Search)

    def test_bad_charset_keeps_the_tag(self):
        e = self.assertRaises(BadCharset, self.parse, b"s1 SEARCH CHARSET KOI8-R ALL")
        self.assertEqual((e.tag, e.charset, e.supported), (b"s1", "KOI8-R", ("UTF-8", "US-ASCII")))
        self.assertIsInstance(e, ParseError)

    def test_search_errors_keep_the_tag(self):
        self.assertEqual(self.bad(b"s2 SEARCH FOO", "unknown search key FOO").tag, b"s2")
        self.bad(b"s2 SEARCH", "missing search criteria")


class SequenceSetTests(SynchronousTestCase):
    def test_parse_and_str(self):
        s = SequenceSet.parse(b"1,3:5,7:*,*,9:2")
        self.assertEqual(s.items, ((1, 1), (3, 5), (7, None), (None, None), (9, 2)))
        self.assertEqual(str(s), "1,3:5,7:*,*,9:2")
        self.assertEqual(SequenceSet.parse("4294967295").items, ((4294967295, 4294967295),))

    def test_invalid(self):
        for text in (
            b"",
            b"0",
            b"01",
            b"1:0",
            b"4294967296",
            b"1:",
            b":1",
            b"1,",
            b",1",
            b"1,,2",
            b"a",
            b"1:2:3",
            b"$",
            b"-1",
            b"1 2",
            b"**",
        ):
            self.assertRaises(ParseError, SequenceSet.parse, text)

    def test_resolve_normalises(self):
        s = SequenceSet.parse(b"9:7,1,2,3,5:6,20:*")
        self.assertEqual(s.resolve(30), [(1, 3), (5, 9), (20, 30)])

    def test_star_range_past_the_largest_includes_it_rfc3501_9(self):
        self.assertEqual(SequenceSet.parse(b"3:*").resolve(2), [(2, 3)])
        self.assertTrue(SequenceSet.parse(b"3:*").contains(2, 2))
        self.assertEqual(SequenceSet.parse(b"*:4").resolve(10), [(4, 10)])
        self.assertEqual(SequenceSet.parse(b"*").resolve(7), [(7, 7)])

    def test_empty_mailbox(self):
        self.assertEqual(SequenceSet.parse(b"*").resolve(0), [])
        self.assertEqual(SequenceSet.parse(b"1:*").resolve(0), [(1, 1)])
        self.assertTrue(SequenceSet.parse(b"*").beyond(0))
        self.assertTrue(SequenceSet.parse(b"1:*").beyond(0))

    def test_beyond(self):
        self.assertFalse(SequenceSet.parse(b"1:*").beyond(5))
        self.assertFalse(SequenceSet.parse(b"5").beyond(5))
        self.assertTrue(SequenceSet.parse(b"6").beyond(5))
        self.assertTrue(SequenceSet.parse(b"7:*").beyond(5))

    def test_contains(self):
        s = SequenceSet.parse(b"2,4:6,10:*")
        self.assertEqual([n for n in range(1, 14) if s.contains(n, 12)], [2, 4, 5, 6, 10, 11, 12])
        self.assertFalse(s.contains(13, 12))
        self.assertTrue(s.contains(13, 13))  # resolved again for another largest number

    def test_select(self):
        s = SequenceSet.parse(b"2,4:6,10:*")
        self.assertEqual(s.select([1, 2, 3, 5, 6, 9, 10, 50], 50), [2, 5, 6, 10, 50])
        self.assertEqual(s.select([], 50), [])
        self.assertEqual(s.select(range(1, 8), 7), [2, 4, 5, 6, 7])

    def test_select_huge_range_is_not_expanded(self):
        s = SequenceSet.parse(b"1:4294967295")
        values = list(range(1, 200_001, 3))
        start = time.perf_counter()
        self.assertEqual(s.select(values, values[-1]), values)
        self.assertTrue(s.contains(4294967295, 5))
        self.assertLess(time.perf_counter() - start, 1.0)

    def test_hundred_thousand_numbers_parse_quickly(self):
        text = b",".join(b"%d" % n for n in range(1, 200_001, 2))
        start = time.perf_counter()
        command = parse_command(b"a UID FETCH " + text + b" (FLAGS)")
        s = command.args.sequence_set
        self.assertEqual(len(s.items), 100_000)
        values = list(range(1, 20_001))
        self.assertEqual(s.select(values, 200_000), list(range(1, 20_001, 2)))
        self.assertEqual(len(s.resolve(200_000)), 100_000)
        self.assertLess(time.perf_counter() - start, 5.0)

    def test_format_set(self):
        self.assertEqual(format_set([1, 2, 3, 5, 7, 8, 10]), "1:3,5,7:8,10")
        self.assertEqual(format_set([]), "")
        self.assertEqual(format_set([4]), "4")
        self.assertEqual(format_set([4, 4, 5]), "4:5")
        self.assertEqual(format_set(range(1, 100_001)), "1:100000")

    def test_format_then_parse(self):
        values = [1, 2, 3, 9, 11, 12, 4294967295]
        s = SequenceSet.parse(format_set(values))
        self.assertEqual(s.select(values, 4294967295), values)
        self.assertEqual(s.resolve(1), [(1, 3), (9, 9), (11, 12), (4294967295, 4294967295)])


class WireFormatTests(SynchronousTestCase):
    def test_quoted(self):
        self.assertEqual(wire.quoted('a "b" \\c'), b'"a \\"b\\" \\\\c"')
        self.assertEqual(wire.quoted(b""), b'""')
        self.assertRaises(ValueError, wire.quoted, "line\r\nbreak")
        self.assertRaises(ValueError, wire.quoted, "café")

    def test_astring(self):
        self.assertEqual(wire.astring("alice"), b"alice")
        self.assertEqual(wire.astring("a]b"), b"a]b")
        self.assertEqual(wire.astring(""), b'""')
        self.assertEqual(wire.astring("two words"), b'"two words"')
        self.assertEqual(wire.astring("nil"), b'"nil"')
        self.assertEqual(wire.astring("a*"), b'"a*"')
        self.assertEqual(wire.astring("café"), b"{5}\r\ncaf\xc3\xa9")
        self.assertEqual(wire.astring(b"a\r\nb"), b"{4}\r\na\r\nb")

    def test_nstring_and_literal(self):
        self.assertEqual(wire.nstring(None), b"NIL")
        self.assertEqual(wire.nstring("NIL"), b'"NIL"')
        self.assertEqual(wire.nstring(b"x\ny"), b"{3}\r\nx\ny")
        self.assertEqual(wire.literal(b""), b"{0}\r\n")

    def test_mailbox_name(self):
        self.assertEqual(wire.mailbox_name("inbox"), b"INBOX")
        self.assertEqual(
            wire.mailbox_name("~peter/mail/台北/日本語"), b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        )
        self.assertEqual(wire.mailbox_name("Tom & Jerry"), b'"Tom &- Jerry"')
        self.assertRaises(ValueError, wire.mailbox_name, "tab\there")

    def test_flag_list(self):
        self.assertEqual(wire.flag_list(["foo", "\\Seen"]), b"(\\Seen foo)")
        self.assertEqual(wire.flag_list(frozenset()), b"()")
        flags = {"\\Seen", "\\Answered", "$Junk", "Abc", "\\*"}
        self.assertEqual(wire.flag_list(flags), b"(\\* \\Answered \\Seen $Junk Abc)")
        self.assertRaises(ValueError, wire.flag_list, ["two words"])
        self.assertRaises(ValueError, wire.flag_list, ["café"])

    def test_internal_date(self):
        dt = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=zone(-7))
        self.assertEqual(wire.internal_date(dt), b'"17-Jul-1996 02:44:25 -0700"')
        dt = datetime.datetime(2024, 1, 5, 23, 0, 9, tzinfo=zone(5, 30))
        self.assertEqual(wire.internal_date(dt), b'" 5-Jan-2024 23:00:09 +0530"')
        self.assertEqual(wire.internal_date(dt.astimezone(UTC)), b'" 5-Jan-2024 17:30:09 +0000"')
        self.assertRaises(ValueError, wire.internal_date, datetime.datetime(2024, 1, 5))


class RoundTripTests(ParserTestCase):
    """What the server writes, its parser reads back to the same value."""

    NAMES = ["INBOX", "Sent Items", "a]b", "", "nil", "Tom & Jerry", "日本語/台北"]
    NAMES += ['quote"back\\slash', "Ünïcödé &- and & more"]

    def test_mailbox_names(self):
        for name in self.NAMES:
            command = self.parse(b"a RENAME " + wire.mailbox_name(name) + b" x")
            self.assertEqual(command.args.old, name)

    def test_astrings(self):
        for text in ["alice", "", "two words", "café", "line\r\nbreak", 'q"\\', "NIL", "a{5}"]:
            command = self.parse(b"a LOGIN " + wire.astring(text) + b" " + wire.astring(text))
            self.assertEqual(command.args, Login(text, text))

    def test_nstrings_in_id(self):
        for value in [None, "x y", "line\nbreak", "NIL"]:
            command = self.parse(
                b"a ID (" + wire.string("name") + b" " + wire.nstring(value) + b")"
            )
            self.assertEqual(command.args, Id((("name", value),)))

    def test_flags(self):
        flags = {"\\Seen", "\\Draft", "$Forwarded", "work"}
        command = self.parse(b"a STORE 1 FLAGS " + wire.flag_list(flags))
        self.assertEqual(set(command.args.flags), flags)

    def test_internal_dates(self):
        for dt in (
            datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=UTC),
            datetime.datetime(
                2030,
                2,
                1,
                0,
                0,
                0,
                tzinfo=zone(-11, 45),
            ),
        ):
            command = self.parse(b"a APPEND x " + wire.internal_date(dt) + b" {1}\r\nm")
            self.assertEqual(command.args.date, dt)
            self.assertEqual(command.args.date.utcoffset(), dt.utcoffset())
