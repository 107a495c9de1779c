"""Real IMAP clients against the appliance: mbsync and offlineimap syncing an account both ways,
and a corpus of real-world and broken MIME messages round-tripped through APPEND, SMTP and FETCH.

The appliance runs in trial's reactor; every client (raw sockets, smtplib, the child processes)
runs in a thread, so the reactor keeps serving while the client waits for it.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import time
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from mailbox_appliance.mime import scan
from tests.support.appliance import PASSWORD, add_account, port_of, started_appliance
from tests.support.imap_clients import (
    RawIMAP,
    Stored,
    account_snapshot,
    account_state,
    maildir_flags,
    maildir_snapshot,
    run_client,
)
from tests.support.mime_corpus import CORPUS

ALICE = "alice@example.test"

#: Maildir info letters and the IMAP flags they stand for (https://cr.yp.to/proto/maildir.html).
LETTER_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}

#: Written by a local mail program into the Maildir, with Unix line ends, while offline.
WRITTEN_OFFLINE = (
    b"From: Alice <alice@example.test>\n"
    b"To: bob@example.test\n"
    b"Subject: written on the train\n"
    b"Date: Mon, 4 Dec 2023 07:45:00 +0100\n"
    b"Message-ID: <offline-1@example.test>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Sp\xc3\xa4ter mehr.\n"
    b".a line that starts with a dot\n"
)
IN_NEW_FOLDER = (
    b"From: Alice <alice@example.test>\n"
    b"To: alice@example.test\n"
    b"Subject: first note in a new folder\n"
    b"Date: Mon, 4 Dec 2023 07:50:00 +0100\n"
    b"Message-ID: <offline-2@example.test>\n"
    b"\n"
    b"Projects start here.\n"
)


def flags_of_file(name: str) -> frozenset[str]:
    """The IMAP flags a Maildir file name carries."""
    return frozenset(LETTER_FLAGS[c] for c in maildir_flags(name) if c in LETTER_FLAGS)


def file_name_with(name: str, letters: str) -> str:
    """``name`` with its Maildir flags replaced by ``letters`` (kept in ASCII order)."""
    return name.partition(":2,")[0] + ":2," + "".join(sorted(letters))


def internet(message: bytes) -> bytes:
    """LF line ends to CRLF (RFC 5322 §2.1); only for messages without bare CR."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class _TwoWaySync:
    """The scenario both sync clients run. Subclasses say how to configure and run the client,
    and how it changes a message on its way between the server and the Maildir."""

    program: str
    timeout = 120
    #: The service the client syncs with; the test's own sessions always use plain "imap".
    service = "imap"

    @inlineCallbacks
    def setUp(self):
        if shutil.which(self.program) is None:
            raise SkipTest(f"{self.program} is not installed")
        services = ("smtp", "imap", self.service)
        self.appliance = yield started_appliance(self, services=sorted(set(services)))
        yield add_account(self.appliance, ALICE)
        self.port = port_of(self.appliance, "imap")
        self.client_port = port_of(self.appliance, self.service)
        self.home = os.path.abspath(self.mktemp())
        self.maildir = os.path.join(self.home, "mail")
        os.makedirs(self.maildir)
        self.configure()

    # -- what a subclass provides ------------------------------------------------------------

    def configure(self) -> None:
        raise NotImplementedError

    def sync(self) -> str:
        """Run one complete two-way sync; its output."""
        raise NotImplementedError

    def local_to_wire(self, local: bytes) -> bytes:
        """A downloaded Maildir file turned back into the bytes the server holds."""
        raise NotImplementedError

    def assert_uploaded(self, stored: bytes, written: bytes) -> None:
        """``stored`` is what the client must have APPENDed for the local file ``written``."""
        raise NotImplementedError

    def assert_nothing_done(self, output: str) -> None:
        """The client's own report of a sync says it changed nothing."""

    def client_state(self) -> object:
        """The client's own record of what it has synced, where it keeps one in the Maildir."""
        return None

    # -- helpers -----------------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        return {"HOME": self.home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}

    def run_program(self, args: list[str]) -> str:
        done = run_client(args, timeout=30, cwd=self.home, env=self.client_env())
        return done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")

    def seed(self) -> None:
        """Mail in INBOX by SMTP and by APPEND, and in two special-use mailboxes."""
        with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=30) as s:
            s.sendmail("alice@example.org", [ALICE], CORPUS["plain_ascii"])
            s.sendmail("joerg@example.de", [ALICE], CORPUS["utf8_body"])
        raw = RawIMAP(self.port)
        try:
            raw.login(ALICE, PASSWORD)
            raw.append("INBOX", CORPUS["encoded_words"], "\\Answered")
            raw.append("Sent", CORPUS["forwarded"], "\\Seen")
            raw.append("Archive", CORPUS["mixed_alternative"], "\\Flagged")
        finally:
            raw.logout()

    def server(self) -> dict[str, list[Stored]]:
        return account_snapshot(self.port, ALICE, PASSWORD)

    def local(self) -> dict[str, dict[str, bytes]]:
        return maildir_snapshot(self.maildir)

    def find_local(self, local, mailbox: str, stored: bytes) -> str:
        """The Maildir file ("cur/name") of ``mailbox`` that holds ``stored``."""
        names = [n for n, data in local[mailbox].items() if self.local_to_wire(data) == stored]
        self.assertEqual(len(names), 1, f"{mailbox}: {stored[:200]!r} in {list(local[mailbox])}")
        return names[0]

    def assert_local_matches(self, server, local, output: str) -> None:
        """The Maildir holds every server mailbox, each message's bytes and flags exactly."""
        self.assertEqual(sorted(local), sorted(server), output)
        for mailbox, messages in server.items():
            want = sorted((m.content, sorted(m.flags)) for m in messages)
            have = sorted(
                (self.local_to_wire(data), sorted(flags_of_file(name)))
                for name, data in local[mailbox].items()
            )
            self.assertEqual(have, want, f"{mailbox}\n{output}")

    # -- the scenario ------------------------------------------------------------------------

    def test_sync_both_ways(self):
        return deferToThread(self.scenario)

    def scenario(self) -> None:
        self.seed()
        before = self.server()
        inbox = before["INBOX"]
        self.assertEqual(len(inbox), 3)
        self.assertTrue(inbox[0].content.endswith(CORPUS["plain_ascii"]), inbox[0].content)
        self.assertTrue(inbox[1].content.endswith(CORPUS["utf8_body"]), inbox[1].content)
        self.assertEqual(inbox[2], Stored(3, frozenset({"\\Answered"}), CORPUS["encoded_words"]))
        delivered_1, delivered_2, appended = inbox

        # 1. Down: every mailbox, every message byte for byte, every flag.
        output = self.sync()
        local = self.local()
        self.assert_local_matches(before, local, output)

        # 2. Local changes: read one, flag one, delete one, write one, make a folder.
        def rename(mailbox, name, letters):
            """Give the file new flags, moving it to cur/ as a mail reader does."""
            base = file_name_with(name.partition("/")[2], letters)
            folder = os.path.join(self.maildir, mailbox)
            os.rename(os.path.join(folder, name), os.path.join(folder, "cur", base))

        name = self.find_local(local, "INBOX", delivered_1.content)
        rename("INBOX", name, maildir_flags(name) + "S")
        name = self.find_local(local, "INBOX", appended.content)
        rename("INBOX", name, maildir_flags(name) + "F")
        name = self.find_local(local, "INBOX", delivered_2.content)
        os.unlink(os.path.join(self.maildir, "INBOX", name))
        unique = f"{int(time.time())}.P{os.getpid()}Q%d.localhost"
        with open(os.path.join(self.maildir, "Archive", "cur", unique % 1 + ":2,S"), "wb") as f:
            f.write(WRITTEN_OFFLINE)
        projects = os.path.join(self.maildir, "Projects")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(projects, sub))
        with open(os.path.join(projects, "new", unique % 2), "wb") as f:
            f.write(IN_NEW_FOLDER)

        # 3. Up: the server has what the Maildir has, and old messages kept their UIDs.
        output = self.sync()
        after = self.server()
        self.assertEqual(sorted(after), sorted([*before, "Projects"]), output)
        self.assertEqual(
            after["INBOX"],
            [
                Stored(1, frozenset({"\\Seen"}), delivered_1.content),
                Stored(3, frozenset({"\\Answered", "\\Flagged"}), appended.content),
            ],
            output,
        )
        for mailbox in ("Sent", "Drafts", "Trash", "Junk"):
            self.assertEqual(after[mailbox], before[mailbox], mailbox)
        self.assertEqual(len(after["Archive"]), 2, output)
        archived, written = after["Archive"]
        self.assertEqual(archived, before["Archive"][0])
        self.assertEqual((written.uid, written.flags), (2, frozenset({"\\Seen"})))
        self.assert_uploaded(written.content, WRITTEN_OFFLINE)
        self.assertEqual(len(after["Projects"]), 1, output)
        (note,) = after["Projects"]
        self.assertEqual((note.uid, note.flags), (1, frozenset()))
        self.assert_uploaded(note.content, IN_NEW_FOLDER)

        # 4. Again: nothing to do on either side.
        state, local = account_state(self.port, ALICE, PASSWORD), self.local()
        client_state = self.client_state()
        output = self.sync()
        self.assertEqual(account_state(self.port, ALICE, PASSWORD), state, output)
        self.assertEqual(self.local(), local, output)
        self.assertEqual(self.client_state(), client_state, output)
        self.assert_nothing_done(output)


class MbsyncTests(_TwoWaySync, TestCase):
    """isync's mbsync (https://isync.sourceforge.io/mbsync.html), plain IMAP on loopback.

    mbsync keeps Maildir files with Unix line ends and marks every message it copies with an
    ``X-TUID`` header, as the last header field, to find it again if a copy is interrupted.
    """

    program = "mbsync"

    def security(self) -> str:
        """The IMAPStore's connection security: none, on loopback."""
        return "SSLType None\n"

    def configure(self) -> None:
        self.config = os.path.join(self.home, "mbsyncrc")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                f"IMAPStore far\n"
                f"Host 127.0.0.1\n"
                f"Port {self.client_port}\n"
                f"User {ALICE}\n"
                f'Pass "{PASSWORD}"\n'
                f"{self.security()}"
                f"AuthMechs LOGIN\n"
                f"\n"
                f"MaildirStore near\n"
                f"Path {self.maildir}/\n"
                f"Inbox {self.maildir}/INBOX\n"
                f"SubFolders Verbatim\n"
                f"\n"
                f"Channel account\n"
                f"Far :far:\n"
                f"Near :near:\n"
                f"Patterns *\n"
                f"Create Both\n"
                f"Expunge Both\n"
                f"SyncState *\n"
            )

    def sync(self) -> str:
        return self.run_program(["mbsync", "-V", "-c", self.config, "-a"])

    def local_to_wire(self, local: bytes) -> bytes:
        original = _without_tuid(local, b"\n")
        if original is None:
            self.fail(f"no X-TUID field at the end of the header: {local[:2000]!r}")
        return internet(original)

    def assert_uploaded(self, stored: bytes, written: bytes) -> None:
        self.assertEqual(_without_tuid(stored, b"\r\n"), internet(written), stored)

    def client_state(self) -> dict[str, bytes]:
        """mbsync's record of what it has synced: the .mbsyncstate file of every folder."""
        state = {}
        for folder in self.local():
            with open(os.path.join(self.maildir, folder, ".mbsyncstate"), "rb") as f:
                state[folder] = f.read()
        return state


class MbsyncOverTLSTests(MbsyncTests):
    """mbsync on the implicit-TLS service (RFC 8314), trusting exactly the appliance's own
    self-signed certificate (a "host" certificate in mbsync's CertificateFile)."""

    service = "imaps"

    def security(self) -> str:
        return (
            "SSLType IMAPS\n"
            "SystemCertificates no\n"
            f"CertificateFile {self.appliance.config.tls_cert_path}\n"
        )


_TUID = re.compile(rb"X-TUID: [A-Za-z0-9+/]{12}")


def _without_tuid(message: bytes, eol: bytes) -> bytes | None:
    """The message without the ``X-TUID`` field mbsync adds as the last header field; None
    when it is not there."""
    head, sep, body = message.partition(eol + eol)
    fields, _, last = head.rpartition(eol)
    if not sep or not _TUID.fullmatch(last):
        return None
    return fields + sep + body


class OfflineimapTests(_TwoWaySync, TestCase):
    """OfflineIMAP (https://www.offlineimap.org/), plain IMAP on loopback, a Maildir with
    ``/`` as its folder separator so folder names are mailbox names."""

    program = "offlineimap"

    def configure(self) -> None:
        self.config = os.path.join(self.home, "offlineimaprc")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(
                f"[general]\n"
                f"accounts = account\n"
                f"metadata = {self.home}/metadata\n"
                f"\n"
                f"[Account account]\n"
                f"localrepository = near\n"
                f"remoterepository = far\n"
                f"\n"
                f"[Repository near]\n"
                f"type = Maildir\n"
                f"localfolders = {self.maildir}\n"
                f"sep = /\n"
                f"\n"
                f"[Repository far]\n"
                f"type = IMAP\n"
                f"remotehost = 127.0.0.1\n"
                f"remoteport = {self.client_port}\n"
                f"remoteuser = {ALICE}\n"
                f"remotepass = {PASSWORD}\n"
                f"ssl = no\n"
                f"starttls = no\n"
            )

    def sync(self) -> str:
        output = self.run_program(["offlineimap", "-c", self.config, "-o", "-u", "basic"])
        # offlineimap reports some failures (a folder it could not sync) and still exits 0.
        self.assertNotRegex(output, r"(?m)^(ERROR|WARNING)", output)
        return output

    def local_to_wire(self, local: bytes) -> bytes:
        return internet(local)

    def assert_uploaded(self, stored: bytes, written: bytes) -> None:
        self.assertEqual(stored, internet(written))

    #: How ``-u basic`` reports copying, deleting, flagging and creating.
    BUSY = re.compile(r"(?m)^(Copy message|Deleting|Adding flag|Removing flag|Creating).*$")

    def assert_nothing_done(self, output: str) -> None:
        self.assertEqual(self.BUSY.findall(output), [], output)


# -- the MIME corpus ---------------------------------------------------------------------------

#: Corpus messages that smtplib sends unchanged: CRLF line ends, a final CRLF, lines short
#: enough for SMTP (RFC 5321 §4.5.3.1.6), no NUL.
DELIVERABLE = [
    "plain_ascii",
    "utf8_body",
    "encoded_words",
    "mixed_alternative",
    "forwarded",
    "addresses",
    "parameter_encodings",
    "duplicate_headers",
]

#: Part by part, the server is compared with Python's email package where that is well
#: defined: in multipart messages in which Python finds no defect. These at least must be so.
PARTS_CHECKED_AT_LEAST = {
    "mixed_alternative",
    "forwarded",
    "digest",
    "binary_part",
    "bare_lf",
    "quoted_boundary",
    "parameter_encodings",
    "nested_forward",
}


def parse(data: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(data)


def defect_free(message: Message) -> bool:
    return not any(part.defects for part in message.walk())


def numbered_parts(message: Message) -> list[tuple[str, Message, bool]]:
    """``(section, entity, has_mime_header)`` for every body part of ``message`` as RFC 3501
    §6.4.5 numbers them. BODY[section] is always ``entity``'s body: the parts of a multipart
    are n.1, n.2...; an encapsulated message's parts continue its part's number; a message
    that is not multipart has one part, its body, with no MIME header of its own."""
    found: list[tuple[str, Message, bool]] = []

    def message_body(entity: Message, prefix: str) -> None:
        if entity.get_content_maintype() == "multipart" and entity.is_multipart():
            for i, sub in enumerate(entity.get_payload(), 1):
                part(sub, f"{prefix}{i}")
        else:
            found.append((f"{prefix}1", entity, False))
            if _encapsulates(entity):
                message_body(entity.get_payload(0), f"{prefix}1.")

    def part(entity: Message, number: str) -> None:
        found.append((number, entity, True))
        if entity.get_content_maintype() == "multipart" and entity.is_multipart():
            for i, sub in enumerate(entity.get_payload(), 1):
                part(sub, f"{number}.{i}")
        elif _encapsulates(entity):
            message_body(entity.get_payload(0), f"{number}.")

    message_body(message, "")
    return found


def _encapsulates(entity: Message) -> bool:
    return entity.get_content_type() == "message/rfc822" and entity.is_multipart()


def header_fields(message: Message) -> list[tuple[str, str]]:
    return list(message.raw_items())


def decoded_body(header: bytes, body: bytes) -> bytes | None:
    """What Python decodes from ``body`` under ``header`` (its Content-Transfer-Encoding)."""
    return parse(header + body).get_payload(decode=True)


class CorpusTests(TestCase):
    """Every corpus message (tests/support/mime_corpus.py) comes back from FETCH exactly as
    stored, with the structure the MIME scanner computes, and with parts where Python's email
    package finds them."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, services=("smtp", "imap"))
        yield add_account(self.appliance, ALICE)
        self.port = port_of(self.appliance, "imap")

    def session(self) -> RawIMAP:
        raw = RawIMAP(self.port)
        self.addCleanup(deferToThread, raw.logout)
        raw.login(ALICE, PASSWORD)
        return raw

    def test_appended_corpus_fetches_byte_for_byte(self):
        def run():
            raw = self.session()
            # Byte-exact APPEND: imaplib would rewrite the bare LF and bare CR line ends.
            for i, data in enumerate(CORPUS.values(), 1):
                self.assertEqual(raw.append("INBOX", data), i)
            raw.ok(b"EXAMINE INBOX")
            fetched = raw.fetch(
                "1:*",
                "(BODY.PEEK[] BODYSTRUCTURE BODY ENVELOPE RFC822.SIZE "
                "BODY.PEEK[]<0.10> BODY.PEEK[]<5.3> BODY.PEEK[HEADER] BODY.PEEK[TEXT])",
            )
            wrong = []
            for i, (name, data) in enumerate(CORPUS.items(), 1):
                structure = scan(data)
                expected = {
                    "BODY[]": data,
                    "BODYSTRUCTURE": structure["bodystructure"].encode("latin-1"),
                    "BODY": structure["body"].encode("latin-1"),
                    "ENVELOPE": structure["envelope"].encode("latin-1"),
                    "RFC822.SIZE": b"%d" % len(data),
                    "BODY[]<0>": data[0:10],
                    "BODY[]<5>": data[5:8],
                }
                for item, value in expected.items():
                    if fetched[i].get(item) != value:
                        wrong.append(f"{name} {item}: got {fetched[i].get(item)!r}, want {value!r}")
                # However a broken message splits, its header and text are all of it.
                header, text = fetched[i].get("BODY[HEADER]"), fetched[i].get("BODY[TEXT]")
                if header is None or text is None or header + text != data:
                    wrong.append(f"{name} BODY[HEADER] {header!r} + BODY[TEXT] {text!r}")
            self.assertEqual(wrong, [], "\n".join(wrong))

        return deferToThread(run)

    def test_parts_are_where_python_finds_them(self):
        def run():
            raw = self.session()
            checked, wrong = set(), []
            for name, data in CORPUS.items():
                message = parse(data)
                if not (defect_free(message) and message.is_multipart()):
                    continue
                checked.add(name)
                n = raw.append("INBOX", data)
                raw.ok(b"EXAMINE INBOX")
                parts = numbered_parts(message)
                items = []
                for number, entity, has_mime in parts:
                    items.append(f"BODY.PEEK[{number}]")
                    if has_mime:
                        items.append(f"BODY.PEEK[{number}.MIME]")
                    if _encapsulates(entity):
                        items += [f"BODY.PEEK[{number}.HEADER]", f"BODY.PEEK[{number}.TEXT]"]
                fetched = raw.fetch(str(n), "(" + " ".join(items) + ")")[n]
                for number, entity, has_mime in parts:
                    wrong += self.compare_part(name, data, number, entity, has_mime, fetched)
            self.assertTrue(PARTS_CHECKED_AT_LEAST <= checked, checked)
            self.assertEqual(wrong, [], "\n".join(wrong))

        return deferToThread(run)

    def compare_part(self, name, data, number, entity, has_mime, fetched) -> list[str]:
        """How BODY[number] and BODY[number.MIME] differ from what Python found there."""
        body = fetched.get(f"BODY[{number}]")
        mime = fetched.get(f"BODY[{number}.MIME]")
        where = f"{name} BODY[{number}]"
        if body is None or (has_mime and mime is None):
            return [f"{where}: missing from the answer, which has {sorted(fetched)}"]
        problems = []
        if has_mime:
            header = mime
            # A header ends with a blank line, except where the part's body is empty and the
            # next delimiter takes that line break (RFC 2046 §5.1.1).
            if body and not re.search(rb"(\A|\n)\r?\n\Z", mime):
                problems.append(f"{where}.MIME does not end with a blank line: {mime!r}")
            if header_fields(parse(mime)) != header_fields(entity):
                problems.append(f"{where}.MIME: got {mime!r}, Python {header_fields(entity)}")
            if mime + body not in data:
                problems.append(f"{where}.MIME and {where} are not one piece of the message")
        else:
            # The body of a message that is not multipart: its header is the message's.
            cte = (entity.get("Content-Transfer-Encoding") or "7bit").encode("latin-1")
            header = b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n"
        if entity.get_content_maintype() == "multipart":
            pass  # Python keeps no raw form of a multipart's body; its parts are checked
        elif _encapsulates(entity):
            inner = header_fields(entity.get_payload(0))
            if header_fields(parse(body)) != inner:
                problems.append(f"{where}: got {body[:1000]!r}, Python's header: {inner}")
            header = fetched.get(f"BODY[{number}.HEADER]")
            text = fetched.get(f"BODY[{number}.TEXT]")
            if header is None or text is None or header + text != body:
                problems.append(f"{where}.HEADER {header!r} + .TEXT {text!r} is not {where}")
            elif header_fields(parse(header)) != inner:
                problems.append(f"{where}.HEADER: got {header!r}, Python: {inner}")
        else:
            want = entity.get_payload(decode=True)
            if decoded_body(header, body) != want:
                problems.append(f"{where}: got {body!r}, Python decodes {want!r}")
        return problems

    def test_delivered_corpus_keeps_its_bytes_after_the_trace_fields(self):
        def run():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=30) as s:
                for name in DELIVERABLE:
                    s.sendmail("sender@remote.test", [ALICE], CORPUS[name])
            raw = self.session()
            raw.ok(b"EXAMINE INBOX")
            fetched = raw.fetch("1:*", "(BODY.PEEK[] BODYSTRUCTURE ENVELOPE RFC822.SIZE)")
            self.assertEqual(len(fetched), len(DELIVERABLE))
            for i, name in enumerate(DELIVERABLE, 1):
                stored = fetched[i]["BODY[]"]
                self.assertTrue(stored.endswith(CORPUS[name]), (name, stored))
                trace = stored[: -len(CORPUS[name])]
                self.assertRegex(trace, rb"\AReturn-Path: <sender@remote\.test>\r\nReceived: ")
                structure = scan(stored)
                self.assertEqual(
                    fetched[i]["BODYSTRUCTURE"], structure["bodystructure"].encode("latin-1")
                )
                self.assertEqual(fetched[i]["ENVELOPE"], structure["envelope"].encode("latin-1"))
                self.assertEqual(fetched[i]["RFC822.SIZE"], b"%d" % len(stored))

        return deferToThread(run)
