"""The POP3 services end to end: the real appliance on loopback, Python's poplib, raw sockets
and getmail.

Each test's client code runs in a thread (the clients block); the server runs in trial's
reactor.  Messages reach INBOX by IMAP APPEND (exact bytes) or by SMTP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import tempfile
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.appliance import (
    LOOPBACK_ANY,
    PASSWORD,
    add_account,
    insecure_tls,
    port_of,
    started_appliance,
)
from tests.support.imap_clients import RawIMAP, run_client
from tests.support.pop3 import (
    DOT_HEADER,
    DOT_LINES,
    MiB,
    RawPOP3,
    append_messages,
    append_streamed,
    capabilities,
    dot_block,
    plain_token,
    pop3_form,
)

ALICE = "alice@example.test"
MESSAGE = (
    b"From: Sender <sender@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: hello there\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b"Second line.\r\n"
    b"Third line.\r\n"
)
DOTS = b"Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\n..\r\na line\r\n.\r\n"
#: RFC 2449 §6, as this server lists them on the plain port before login, from loopback.
CAPABILITIES = {
    "TOP",
    "UIDL",
    "USER",
    "SASL PLAIN",
    "STLS",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "EXPIRE NEVER",
    "LOGIN-DELAY 0",
}


class POP3TestCase(TestCase):
    timeout = 30
    services = ("smtp", "pop3", "pop3s", "imap")
    overrides: dict = {}

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, services=self.services, **self.overrides)
        self.alice = yield add_account(self.appliance, ALICE)
        self.pop3_port = port_of(self.appliance, "pop3")
        self.imap_port = port_of(self.appliance, "imap") if "imap" in self.services else None

    def in_thread(self, fn, *args):
        return deferToThread(fn, *args)

    def pop(self, login: bool = True) -> poplib.POP3:
        c = poplib.POP3("127.0.0.1", self.pop3_port, timeout=30)
        self.addCleanup(deferToThread, _quit, c)
        if login:
            c.user(ALICE)
            c.pass_(PASSWORD)
        return c

    def raw(self, port: int | None = None, **kw) -> RawPOP3:
        c = RawPOP3(port or self.pop3_port, **kw)
        self.addCleanup(deferToThread, _finish, c)
        return c

    def append(self, *messages: bytes) -> list[int]:
        return append_messages(self.imap_port, ALICE, PASSWORD, messages)

    def deliver(self, message: bytes = MESSAGE, to: str = ALICE) -> None:
        with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=30) as s:
            s.sendmail("sender@remote.test", [to], message)

    def retr(self, c: poplib.POP3, n: int) -> bytes:
        """RETR through poplib, its lines joined again with CRLF (poplib strips them)."""
        resp, lines, _ = c.retr(n)
        self.assertTrue(resp.startswith(b"+OK"), resp)
        return b"".join(line + b"\r\n" for line in lines)

    def login_when_free(self, deadline: float = 5.0) -> poplib.POP3:
        """Log in, retrying while the server has not yet seen a dropped session go."""
        give_up = time.monotonic() + deadline
        while True:
            c = poplib.POP3("127.0.0.1", self.pop3_port, timeout=30)
            self.addCleanup(deferToThread, _quit, c)
            c.user(ALICE)
            try:
                c.pass_(PASSWORD)
                return c
            except poplib.error_proto as e:
                if b"[IN-USE]" not in e.args[0] or time.monotonic() > give_up:
                    raise
                c.close()
                time.sleep(0.05)


def _quit(c: poplib.POP3) -> None:
    """QUIT, and wait for the server to close (the reactor must be clean after a test)."""
    try:
        c._shortcmd("QUIT")
        while c.file.read(65536):
            pass
    except Exception:
        pass
    c.close()


def _finish(c: RawPOP3) -> None:
    """QUIT if the session is still there, and wait for the server to close."""
    try:
        c.send(b"QUIT\r\n")
    except OSError:
        pass
    c.wait_closed()


def _err(test: TestCase, call, *args) -> bytes:
    """The -ERR line a poplib call raises."""
    with test.assertRaises(poplib.error_proto) as e:
        call(*args)
    line = e.exception.args[0]
    test.assertRegex(line, rb"^-ERR \S")  # with a reason (RFC 1939 §3)
    return line


class AuthorizationTests(POP3TestCase):
    overrides = {
        "auth": {
            "throttle": {"delay": 0.01, "max_delay": 0.05, "lockout_after": 4, "lockout_time": 60}
        }
    }

    def test_capa_lists_exactly_the_capabilities(self):
        def run():
            raw = self.raw()
            self.assertRegex(raw.greeting, rb"^\+OK ")
            caps = capabilities(raw)
            implementation = [c for c in caps if c.startswith("IMPLEMENTATION ")]
            self.assertEqual(len(implementation), 1, caps)
            self.assertEqual(set(caps) - set(implementation), CAPABILITIES)
            self.assertEqual(len(caps), len(CAPABILITIES) + 1, caps)  # no duplicates
            # After login, STLS is gone (RFC 2595 §4: only in the AUTHORIZATION state).
            raw.login(ALICE, PASSWORD)
            self.assertEqual(set(capabilities(raw)), set(caps) - {"STLS"})
            # poplib reads the same list.
            c = self.pop(login=False)
            self.assertEqual(c.capa()["SASL"], ["PLAIN"])
            self.assertIn("STLS", c.capa())

        return self.in_thread(run)

    def test_user_pass(self):
        def run():
            self.append(MESSAGE)
            c = self.pop(login=False)
            self.assertTrue(c.user(ALICE).startswith(b"+OK"))
            self.assertTrue(c.pass_(PASSWORD).startswith(b"+OK"))
            self.assertEqual(c.stat(), (1, len(MESSAGE)))

        return self.in_thread(run)

    def test_stls_then_login(self):
        def run():
            self.append(MESSAGE)
            c = self.pop(login=False)
            c.stls(context=insecure_tls())
            self.assertNotIn("STLS", c.capa())
            c.user(ALICE)
            c.pass_(PASSWORD)
            self.assertEqual(self.retr(c, 1), MESSAGE)
            _err(self, c._shortcmd, "STLS")  # not in the TRANSACTION state

        return self.in_thread(run)

    def test_implicit_tls(self):
        def run():
            self.append(MESSAGE)
            c = poplib.POP3_SSL(
                "127.0.0.1", port_of(self.appliance, "pop3s"), context=insecure_tls(), timeout=30
            )
            self.addCleanup(deferToThread, _quit, c)
            caps = c.capa()
            self.assertNotIn("STLS", caps)
            self.assertIn("USER", caps)
            line = _err(self, c._shortcmd, "STLS")
            self.assertIn(b"TLS", line)
            c.user(ALICE)
            c.pass_(PASSWORD)
            self.assertEqual(self.retr(c, 1), MESSAGE)

        return self.in_thread(run)

    def test_auth_plain_with_initial_response(self):
        def run():
            self.append(MESSAGE)
            raw = self.raw()
            line = raw.auth_plain(ALICE, PASSWORD)
            self.assertTrue(line.startswith(b"+OK"), line)
            self.assertEqual(raw.ok("STAT"), b"+OK 1 %d\r\n" % len(MESSAGE))

        return self.in_thread(run)

    def test_auth_plain_with_a_continuation(self):
        def run():
            raw = self.raw()
            # RFC 5034 §4: an empty challenge is "+ " and the client answers on its own line.
            self.assertEqual(raw.command("AUTH PLAIN"), b"+ \r\n")
            line = raw.command(plain_token(ALICE, PASSWORD))
            self.assertTrue(line.startswith(b"+OK"), line)
            self.assertEqual(raw.ok("STAT"), b"+OK 0 0\r\n")

        return self.in_thread(run)

    def test_auth_plain_can_be_cancelled_and_wrong_credentials_fail(self):
        def run():
            raw = self.raw()
            self.assertEqual(raw.command("AUTH PLAIN"), b"+ \r\n")
            self.assertTrue(raw.command("*").startswith(b"-ERR "))  # RFC 5034 §4
            line = raw.auth_plain(ALICE, "wrong")
            self.assertTrue(line.startswith(b"-ERR [AUTH] "), line)
            line = raw.command("AUTH CRAM-MD5")
            self.assertTrue(line.startswith(b"-ERR "), line)
            self.assertTrue(raw.auth_plain(ALICE, PASSWORD).startswith(b"+OK"))

        return self.in_thread(run)

    def test_wrong_password_is_err_auth(self):
        def run():
            c = self.pop(login=False)
            c.user(ALICE)
            line = _err(self, c.pass_, "wrong")
            self.assertTrue(line.startswith(b"-ERR [AUTH] "), line)
            c.user("nobody@example.test")
            line = _err(self, c.pass_, PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [AUTH] "), line)
            # Still in AUTHORIZATION: the right password works now.
            c.user(ALICE)
            self.assertTrue(c.pass_(PASSWORD).startswith(b"+OK"))

        return self.in_thread(run)

    def test_repeated_failures_lock_out_with_sys_temp(self):
        def run():
            raw = self.raw()
            answers = []
            for _ in range(6):
                raw.ok("USER " + ALICE)
                answers.append(raw.command("PASS wrong"))
            self.assertTrue(answers[0].startswith(b"-ERR [AUTH] "), answers)
            self.assertTrue(answers[-1].startswith(b"-ERR [SYS/TEMP] "), answers)
            # Locked: even the right password is refused, over USER/PASS and AUTH PLAIN.
            raw.ok("USER " + ALICE)
            line = raw.command("PASS " + PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [SYS/TEMP] "), line)
            line = raw.auth_plain(ALICE, PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [SYS/TEMP] "), line)

        return self.in_thread(run)

    def test_pass_without_user_and_transaction_commands_before_login_are_errors(self):
        def run():
            raw = self.raw()
            for command in ("PASS x", "STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "RSET"):
                line = raw.command(command)
                self.assertRegex(line, rb"^-ERR \S", command)
            self.assertTrue(raw.command("NOOP").startswith(b"+OK"))
            raw.login(ALICE, PASSWORD)
            for command in ("USER " + ALICE, "PASS x", "AUTH PLAIN " + "AA==", "STLS"):
                line = raw.command(command)
                self.assertRegex(line, rb"^-ERR \S", command)
            self.assertTrue(raw.ok("STAT"))

        return self.in_thread(run)

    def test_unknown_command_and_over_long_line_are_errors_and_the_session_goes_on(self):
        def run():
            raw = self.raw()
            self.assertRegex(raw.command("FROBNICATE"), rb"^-ERR \S")
            self.assertRegex(raw.command("LIST1"), rb"^-ERR \S")
            self.assertTrue(raw.command("noop").startswith(b"+OK"))  # RFC 1939 §3: any case
            raw.send(b"NOOP " + b"x" * 100_000 + b"\r\n")
            self.assertRegex(raw.line(), rb"^-ERR \S")
            self.assertTrue(raw.command("NOOP").startswith(b"+OK"))
            raw.login(ALICE, PASSWORD)
            raw.send(b"USER " + b"y" * 20_000 + b"\r\n")
            self.assertRegex(raw.line(), rb"^-ERR \S")
            self.assertEqual(raw.ok("STAT"), b"+OK 0 0\r\n")

        return self.in_thread(run)

    def test_quit_before_login_closes(self):
        def run():
            raw = self.raw()
            self.assertTrue(raw.quit().startswith(b"+OK"))

        return self.in_thread(run)


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    for target in ("192.0.2.1", "198.51.100.1", "10.255.255.255"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))  # UDP: no packet is sent, a route is chosen
                address = s.getsockname()[0]
        except OSError:
            continue
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


class PasswordsNeedTLSTests(POP3TestCase):
    """RFC 2595 §2 / RFC 8314: from anywhere but loopback, no password before STLS."""

    services = ("pop3",)

    def listen(self) -> dict:
        address = _non_loopback_ipv4()
        if address is None:
            raise SkipTest("this machine has no non-loopback IPv4 address to connect from")
        self.host, self.proxy_from = address, None
        return {"pop3": [f"tcp:0:interface={address}"]}

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, listen=self.listen())
        self.alice = yield add_account(self.appliance, ALICE)
        self.pop3_port = port_of(self.appliance, "pop3")

    def test_user_and_auth_are_refused_until_stls(self):
        def run():
            raw = self.raw(host=self.host, proxy_from=self.proxy_from)
            caps = capabilities(raw)
            self.assertIn("STLS", caps)
            self.assertNotIn("USER", caps)
            self.assertNotIn("SASL PLAIN", caps)
            line = raw.command("USER " + ALICE)
            self.assertTrue(line.startswith(b"-ERR [AUTH] "), line)
            line = raw.auth_plain(ALICE, PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [AUTH] "), line)
            raw.stls(insecure_tls())
            caps = capabilities(raw)
            self.assertIn("USER", caps)
            self.assertIn("SASL PLAIN", caps)
            self.assertNotIn("STLS", caps)
            raw.login(ALICE, PASSWORD)
            self.assertEqual(raw.ok("STAT"), b"+OK 0 0\r\n")

        return self.in_thread(run)


class PasswordsNeedTLSBehindHAProxyTests(PasswordsNeedTLSTests):
    """The same behind a ``haproxy:`` listener: the client is the address in the PROXY
    header (192.0.2.7), not the balancer's loopback connection."""

    def listen(self) -> dict:
        self.host, self.proxy_from = "127.0.0.1", "192.0.2.7"
        return {"pop3": ["haproxy:" + LOOPBACK_ANY]}

    def test_user_and_auth_are_refused_until_stls(self):
        return super().test_user_and_auth_are_refused_until_stls()


class TransactionTests(POP3TestCase):
    def test_stat_list_uidl_retr_top_dele_rset_noop_quit(self):
        second = MESSAGE.replace(b"hello there", b"second message")
        third = DOTS

        def run():
            uids = self.append(MESSAGE, second, third)
            c = self.pop()
            sizes = [len(MESSAGE), len(second), len(third)]
            self.assertEqual(c.stat(), (3, sum(sizes)))
            resp, lines, _ = c.list()
            self.assertTrue(resp.startswith(b"+OK"))
            self.assertEqual(lines, [b"%d %d" % (n, s) for n, s in enumerate(sizes, 1)])
            self.assertEqual(c.list(2), b"+OK 2 %d" % sizes[1])
            resp, lines, _ = c.uidl()
            listing = dict(line.split(b" ") for line in lines)
            self.assertEqual(list(listing), [b"1", b"2", b"3"])
            for n, uid in enumerate(uids, 1):
                # RFC 1939 §7: 1 to 70 characters in 0x21..0x7E; here <UIDVALIDITY>.<UID>.
                self.assertRegex(listing[b"%d" % n], rb"^\d+\.%d$" % uid)
                self.assertEqual(c.uidl(n), b"+OK %d %s" % (n, listing[b"%d" % n]))
            self.assertEqual(self.retr(c, 1), MESSAGE)
            self.assertEqual(self.retr(c, 2), second)
            self.assertEqual(self.retr(c, 3), third)
            self.assertTrue(c.noop().startswith(b"+OK"))
            self.assertTrue(c.dele(2).startswith(b"+OK"))
            self.assertEqual(c.stat(), (2, sizes[0] + sizes[2]))
            self.assertEqual([line.split()[0] for line in c.list()[1]], [b"1", b"3"])
            self.assertEqual([line.split()[0] for line in c.uidl()[1]], [b"1", b"3"])
            self.assertTrue(c.rset().startswith(b"+OK"))
            self.assertEqual(c.stat(), (3, sum(sizes)))
            self.assertEqual(self.retr(c, 2), second)
            self.assertTrue(c.quit().startswith(b"+OK"))

        return self.in_thread(run)

    def test_top(self):
        header = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"

        def run():
            self.append(MESSAGE, b"Subject: no body\r\n", b"\r\nbody only\r\nline 2\r\n")
            c = self.pop()
            resp, lines, _ = c.top(1, 0)
            self.assertTrue(resp.startswith(b"+OK"))
            self.assertEqual(b"".join(line + b"\r\n" for line in lines), header)
            resp, lines, _ = c.top(1, 2)
            self.assertEqual(
                b"".join(line + b"\r\n" for line in lines),
                header + b"Hello Alice.\r\nSecond line.\r\n",
            )
            resp, lines, _ = c.top(1, 100)  # more lines than the body has: all of it
            self.assertEqual(b"".join(line + b"\r\n" for line in lines), MESSAGE)
            # No blank line at all: the whole message is header.
            self.assertEqual(c.top(2, 0)[1], [b"Subject: no body"])
            # A message that starts with the blank line has an empty header.
            self.assertEqual(c.top(3, 0)[1], [b""])
            self.assertEqual(c.top(3, 1)[1], [b"", b"body only"])
            for args in ("1", "1 x", "1 -1", "9 0", "", "0 0"):
                _err(self, c._longcmd, "TOP " + args if args else "TOP")
            # TOP does not count as retrieval, and the session is fine after the errors.
            self.assertEqual(self.retr(c, 1), MESSAGE)

        return self.in_thread(run)

    def test_top_of_a_message_with_dot_lines_is_stuffed(self):
        def run():
            self.append(DOTS)
            c = self.pop()
            resp, lines, _ = c.top(1, 4)
            self.assertEqual(
                b"".join(line + b"\r\n" for line in lines),
                b"Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\n..\r\n",
            )

        return self.in_thread(run)

    def test_bad_message_numbers_are_errors(self):
        def run():
            self.append(MESSAGE, MESSAGE)
            c = self.pop()
            for command in ("RETR", "LIST", "UIDL", "DELE"):
                for arg in ("3", "0", "-1", "x", "99999999999999999999"):
                    line = _err(self, c._shortcmd, f"{command} {arg}")
                    if arg == "3":
                        self.assertIn(b"No such message", line)
            for command in ("RETR", "DELE"):
                _err(self, c._shortcmd, command)  # the argument is needed
            self.assertEqual(c.stat(), (2, 2 * len(MESSAGE)))

        return self.in_thread(run)

    def test_a_deleted_message_is_an_error_until_rset(self):
        def run():
            self.append(MESSAGE, MESSAGE)
            c = self.pop()
            c.dele(1)
            for command in ("RETR 1", "LIST 1", "UIDL 1", "DELE 1", "TOP 1 0"):
                line = _err(self, c._shortcmd, command)
                self.assertIn(b"deleted", line)
            self.assertEqual(c.stat(), (1, len(MESSAGE)))
            c.rset()
            self.assertEqual(self.retr(c, 1), MESSAGE)

        return self.in_thread(run)

    def test_pipelined_commands_are_answered_in_order(self):
        def run():
            self.append(MESSAGE, DOTS)
            raw = self.raw()
            raw.send(
                f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 2\r\nLIST 1\r\n"
                "DELE 1\r\nRETR 1\r\nNOOP\r\n".encode()
            )
            self.assertTrue(raw.line().startswith(b"+OK"))
            self.assertTrue(raw.line().startswith(b"+OK"))
            self.assertEqual(raw.line(), b"+OK 2 %d\r\n" % (len(MESSAGE) + len(DOTS)))
            self.assertTrue(raw.line().startswith(b"+OK"))
            self.assertEqual(raw.body(), DOTS)
            self.assertEqual(raw.line(), b"+OK 1 %d\r\n" % len(MESSAGE))
            self.assertTrue(raw.line().startswith(b"+OK"))
            self.assertTrue(raw.line().startswith(b"-ERR "))
            self.assertTrue(raw.line().startswith(b"+OK"))

        return self.in_thread(run)


class MaildropTests(POP3TestCase):
    """The maildrop: a snapshot at login, locked to one session, changed only at QUIT."""

    def test_the_maildrop_is_a_snapshot_taken_at_login(self):
        def run():
            self.append(MESSAGE)
            c = self.pop()
            self.assertEqual(c.stat(), (1, len(MESSAGE)))
            self.deliver(DOTS)  # delivered during the session: not seen in it
            self.append(MESSAGE)
            self.assertEqual(c.stat(), (1, len(MESSAGE)))
            self.assertEqual(len(c.list()[1]), 1)
            self.assertEqual(len(c.uidl()[1]), 1)
            _err(self, c._shortcmd, "RETR 2")
            c.quit()
            c = self.pop()
            count, _ = c.stat()
            self.assertEqual(count, 3)
            self.assertTrue(self.retr(c, 2).endswith(DOTS))  # after the Received lines

        return self.in_thread(run)

    def test_uidls_are_the_same_in_every_session_and_after_deletions(self):
        def run():
            self.append(MESSAGE, MESSAGE, DOTS, MESSAGE)
            c = self.pop()
            first = [line.split()[1] for line in c.uidl()[1]]
            self.assertEqual(len(set(first)), 4)  # unique, though two messages are equal
            c.quit()
            c = self.pop()
            self.assertEqual([line.split()[1] for line in c.uidl()[1]], first)
            c.dele(1)
            c.dele(3)
            c.quit()
            c = self.pop()
            self.assertEqual([line.split()[1] for line in c.uidl()[1]], [first[1], first[3]])
            self.assertEqual(c.uidl(2), b"+OK 2 " + first[3])
            self.assertEqual(self.retr(c, 2), MESSAGE)

        return self.in_thread(run)

    def test_a_second_session_gets_in_use_until_the_first_quits(self):
        def run():
            self.append(MESSAGE)
            a = self.pop()
            b = self.pop(login=False)
            b.user(ALICE)
            line = _err(self, b.pass_, PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [IN-USE] "), line)
            # Also over the other service and AUTH PLAIN: the lock is per maildrop.
            raw = self.raw(port_of(self.appliance, "pop3s"), tls=insecure_tls())
            line = raw.auth_plain(ALICE, PASSWORD)
            self.assertTrue(line.startswith(b"-ERR [IN-USE] "), line)
            self.assertEqual(a.stat(), (1, len(MESSAGE)))  # the first goes on
            a.quit()
            b.user(ALICE)
            self.assertTrue(b.pass_(PASSWORD).startswith(b"+OK"))
            self.assertEqual(b.stat(), (1, len(MESSAGE)))

        return self.in_thread(run)

    def test_a_dropped_session_frees_the_maildrop(self):
        def run():
            a = self.raw()
            a.login(ALICE, PASSWORD)
            a.close()  # no QUIT
            self.assertEqual(self.login_when_free().stat(), (0, 0))

        return self.in_thread(run)

    def test_dele_then_a_dropped_connection_deletes_nothing(self):
        def run():
            self.append(MESSAGE, DOTS)
            a = self.raw()
            a.login(ALICE, PASSWORD)
            a.ok("DELE 1")
            a.ok("DELE 2")
            self.assertEqual(a.ok("STAT"), b"+OK 0 0\r\n")
            a.close()  # RFC 1939 §6: no QUIT, no UPDATE state
            c = self.login_when_free()
            self.assertEqual(c.stat(), (2, len(MESSAGE) + len(DOTS)))
            self.assertEqual(self.retr(c, 1), MESSAGE)

        return self.in_thread(run)

    def test_dele_then_quit_expunges_and_imap_sees_it(self):
        def run():
            uids = self.append(MESSAGE, DOTS, MESSAGE)
            imap = RawIMAP(self.imap_port)
            self.addCleanup(imap.close)
            imap.login(ALICE, PASSWORD)
            self.assertIn(b"* 3 EXISTS", imap.ok(b"SELECT INBOX"))
            c = self.pop()
            c.dele(2)
            self.assertNotIn(b"EXPUNGE", imap.ok(b"NOOP"))  # DELE only marks
            self.assertTrue(c.quit().startswith(b"+OK"))
            self.assertIn(b"* 2 EXPUNGE\r\n", imap.ok(b"NOOP"))
            self.assertIn(b"* SEARCH %d %d" % (uids[0], uids[2]), imap.ok(b"UID SEARCH ALL"))
            imap.logout()
            c = self.pop()
            self.assertEqual(c.stat(), (2, 2 * len(MESSAGE)))

        return self.in_thread(run)

    def test_a_message_expunged_by_imap_during_the_session(self):
        def run():
            self.append(MESSAGE, DOTS, MESSAGE)
            c = self.pop()
            imap = RawIMAP(self.imap_port)
            self.addCleanup(imap.close)
            imap.login(ALICE, PASSWORD)
            imap.ok(b"SELECT INBOX")
            imap.ok(b"STORE 2 +FLAGS (\\Deleted)")
            imap.ok(b"EXPUNGE")
            # The snapshot still lists it, but its content is gone: a temporary error.
            self.assertEqual(c.stat(), (3, 2 * len(MESSAGE) + len(DOTS)))
            line = _err(self, c._longcmd, "RETR 2")
            self.assertTrue(line.startswith(b"-ERR [SYS/TEMP] "), line)
            self.assertEqual(self.retr(c, 3), MESSAGE)
            # Deleting it as well as another one: QUIT removes what is still there.
            c.dele(2)
            c.dele(3)
            self.assertTrue(c.quit().startswith(b"+OK"))
            self.assertIn(b"* 2 EXPUNGE", imap.ok(b"NOOP"))
            imap.logout()
            self.assertEqual(self.pop().stat(), (1, len(MESSAGE)))

        return self.in_thread(run)

    def test_quit_without_deletions_keeps_everything(self):
        def run():
            self.append(MESSAGE)
            c = self.pop()
            c.dele(1)
            c.rset()
            self.assertTrue(c.quit().startswith(b"+OK"))
            self.assertEqual(self.pop().stat(), (1, len(MESSAGE)))

        return self.in_thread(run)


class SlowPasswordTests(POP3TestCase):
    """Logins whose password check takes a while (a costly argon2), so that a client can be
    gone before it ends."""

    services = ("pop3",)
    overrides = {"auth": {"password_hash": {"time_cost": 3, "memory_kib": 65536, "parallelism": 1}}}

    def test_a_connection_dropped_during_login_does_not_keep_the_maildrop(self):
        def run():
            a = self.raw()
            a.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
            a.close()  # gone while the password is being checked
            time.sleep(1.0)  # the check ends; the session must not lock the maildrop now
            c = self.login_when_free(deadline=3.0)
            self.assertEqual(c.stat(), (0, 0))

        return self.in_thread(run)


class ContentTests(POP3TestCase):
    """RETR gives back the stored bytes as a POP3 multi-line response (RFC 1939 §3)."""

    def test_dot_lines_round_trip(self):
        def run():
            self.append(DOTS, b"Subject: x\r\n\r\n.\r\n", b".\r\n", b"..\r\n.\r\n..\r\n")
            c = self.pop()
            self.assertEqual(self.retr(c, 1), DOTS)
            self.assertEqual(self.retr(c, 2), b"Subject: x\r\n\r\n.\r\n")
            self.assertEqual(self.retr(c, 3), b".\r\n")
            self.assertEqual(self.retr(c, 4), b"..\r\n.\r\n..\r\n")

        return self.in_thread(run)

    def test_dot_lines_are_stuffed_on_the_wire(self):
        def run():
            self.append(DOTS)
            raw = self.raw()
            raw.login(ALICE, PASSWORD)
            raw.ok("RETR 1")
            wire = b""
            while not wire.endswith(b"\r\n.\r\n"):
                wire += raw.line()
            self.assertEqual(
                wire,
                b"Subject: dots\r\n\r\n..one dot\r\n...two dots\r\n..\r\n...\r\n"
                b"a line\r\n..\r\n.\r\n",
            )

        return self.in_thread(run)

    def test_a_message_without_a_final_line_end_gets_one(self):
        message = b"Subject: no end\r\n\r\nlast line without CRLF"

        def run():
            self.append(message, b"Subject: y\r\n\r\n.")
            c = self.pop()
            self.assertEqual(self.retr(c, 1), message + b"\r\n")
            self.assertEqual(self.retr(c, 2), b"Subject: y\r\n\r\n.\r\n")

        return self.in_thread(run)

    def test_bare_lf_goes_out_as_crlf(self):
        message = b"Subject: bare\nX-Other: h\r\n\nline one\nline two\r\n.dot after LF\nend"

        def run():
            self.append(message)
            # What is stored is what was sent (design §2 rule 8).
            imap = RawIMAP(self.imap_port)
            self.addCleanup(imap.close)
            imap.login(ALICE, PASSWORD)
            imap.ok(b"EXAMINE INBOX")
            self.assertEqual(imap.fetch("1", "BODY.PEEK[]")[1]["BODY[]"], message)
            # On the wire, every line ends in CRLF and the dot line is stuffed.
            pop = self.raw()
            pop.login(ALICE, PASSWORD)
            pop.ok("RETR 1")
            wire = b""
            while not wire.endswith(b"\r\n.\r\n"):
                wire += pop.line()
            self.assertEqual(
                wire,
                b"Subject: bare\r\nX-Other: h\r\n\r\nline one\r\nline two\r\n"
                b"..dot after LF\r\nend\r\n.\r\n",
            )
            self.assertEqual(pop.ok("LIST 1"), b"+OK 1 %d\r\n" % len(message))
            pop.quit()
            c = self.pop()
            self.assertEqual(self.retr(c, 1), pop3_form(message))

        return self.in_thread(run)

    def test_streamed_messages_keep_lines_and_stuffing_across_chunk_boundaries(self):
        """Past 256 KiB the server reads 256 KiB chunks: put a dot line, a CRLF and a bare
        LF right at the chunk boundaries, where a chunk-at-a-time stuffer can go wrong."""
        chunk = 256 * 1024
        content = bytearray(b"Subject: boundaries\r\n\r\n")
        _pad_to(content, chunk)
        content += b".dot at the start of the second chunk\r\n"
        _pad_to(content, 2 * chunk - 4)
        content += b"abc\r"  # CR ends the second chunk, its LF starts the third
        content += b"\n.dot after a split CRLF\r\n"
        _pad_to(content, 3 * chunk - 4)
        content += b"bar\n"  # a bare LF ends the third chunk
        content += b".dot after a bare LF\r\n"
        _pad_to(content, 4 * chunk - 2)
        content += b"\r\n"
        content += b".\r\n"  # a lone dot line starts the fifth chunk
        _pad_to(content, 6 * chunk - 4)
        content += b"abc\r"  # a lone CR (no LF after it) ends the sixth chunk: kept as is
        content += b"def\r\n"
        _pad_to(content, 6 * chunk + 1000)
        content += b"the end, without a line end"
        message = bytes(content)

        def run():
            self.append(message)
            c = self.pop()
            self.assertEqual(c.list(1), b"+OK 1 %d" % len(message))
            got = self.retr(c, 1)
            self.assertEqual(len(got), len(pop3_form(message)))
            self.assertEqual(got, pop3_form(message))
            raw = self.raw()
            c.quit()
            raw.login(ALICE, PASSWORD)
            first, content_ = raw.multiline("RETR 1")
            self.assertEqual(content_, pop3_form(message))

        return self.in_thread(run)

    def test_top_of_a_streamed_message_whose_header_ends_at_a_chunk_boundary(self):
        chunk = 256 * 1024
        messages = []
        for split in (b"\r\n|\r\n", b"\r\n\r|\n", b"\r|\n\r\n"):
            before, after = split.split(b"|")
            content = bytearray(b"Subject: a long header\r\n")
            # header lines up to just before the boundary, then its blank line across it
            while len(content) < chunk - 200:
                content += b"X-Filler: " + b"h" * 60 + b"\r\n"
            content += b"X-Last: " + b"z" * (chunk - len(before) - len(content) - 8)
            self.assertEqual(len(content) + len(before), chunk)
            content += before + after
            content += b"body line 1\r\n.body line 2\r\nbody line 3\r\n"
            _pad_to(content, chunk + 100_000)
            messages.append(bytes(content))

        def run():
            self.append(*messages)
            c = self.pop()
            for n, message in enumerate(messages, 1):
                header, _, body = message.partition(b"\r\n\r\n")
                for lines, expected in (
                    (0, header + b"\r\n\r\n"),
                    (2, header + b"\r\n\r\nbody line 1\r\n.body line 2\r\n"),
                ):
                    resp, got, _ = c.top(n, lines)
                    got = b"".join(line + b"\r\n" for line in got)
                    self.assertEqual(got, expected, (n, lines))

        return self.in_thread(run)

    def test_a_100_mib_message_round_trips(self):
        blocks = 100
        block = dot_block(MiB)
        size = len(DOT_HEADER) + blocks * len(block)
        expected = hashlib.sha256(DOT_HEADER)
        for _ in range(blocks):
            expected.update(block)

        def run():
            parts = [DOT_HEADER] + [block] * blocks
            append_streamed(self.imap_port, ALICE, PASSWORD, size, parts)
            raw = self.raw()
            raw.sock.settimeout(120)
            raw.login(ALICE, PASSWORD)
            self.assertEqual(raw.ok("LIST 1"), b"+OK 1 %d\r\n" % size)
            first, length, digest = raw.digest("RETR 1")
            self.assertTrue(first.startswith(b"+OK"), first)
            self.assertEqual((length, digest), (size, expected.hexdigest()))
            first, top = raw.multiline("TOP 1 2")
            self.assertEqual(top, DOT_HEADER + DOT_LINES[:128])
            self.assertTrue(raw.command("NOOP").startswith(b"+OK"))

        return self.in_thread(run)

    test_a_100_mib_message_round_trips.timeout = 120  # type: ignore[attr-defined]


def _pad_to(content: bytearray, size: int) -> None:
    """Append ordinary CRLF lines (at most 78 bytes) until ``content`` is ``size`` long."""
    while len(content) < size:
        left = size - len(content)
        if left >= 80:
            content += b"f" * 76 + b"\r\n"
        elif left >= 2:
            content += b"g" * (left - 2) + b"\r\n"
        else:
            raise ValueError("cannot pad by one byte")


class GetmailTests(POP3TestCase):
    """getmail6 (a real POP3 client) fetches everything into a Maildir and deletes it."""

    timeout = 60

    def setUp(self):
        if shutil.which("getmail") is None:
            raise SkipTest("getmail (Debian package getmail6) is not installed")
        return super().setUp()

    def fetch_with_getmail(self, retriever: str, port: int) -> dict[str, bytes]:
        """Run getmail once; the Maildir's messages, {name: bytes}."""
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        # getmail will not write a Maildir as root: as root, deliver as nobody into a
        # Maildir that nobody owns (under /tmp, which nobody can reach).
        user = ""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            top = tempfile.mkdtemp(prefix="pop3-getmail-")
            self.addCleanup(shutil.rmtree, top, True)
            os.chown(top, nobody.pw_uid, nobody.pw_gid)
            maildir = os.path.join(top, "Maildir")
            user = "user = nobody\n"
        else:
            maildir = os.path.join(home, "Maildir")
        for sub in ("", "cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
            if user:
                os.chown(os.path.join(maildir, sub), nobody.pw_uid, nobody.pw_gid)
        rcfile = os.path.join(home, "getmailrc")
        with open(rcfile, "w") as f:
            f.write(
                "[retriever]\n"
                f"type = {retriever}\n"
                "server = 127.0.0.1\n"
                f"port = {port}\n"
                f"username = {ALICE}\n"
                f"password = {PASSWORD}\n"
                "[destination]\n"
                "type = Maildir\n"
                f"path = {maildir}/\n"
                f"{user}"
                "[options]\n"
                "delete = true\n"
                "read_all = true\n"
                "verbose = 2\n"
            )
        run_client(["getmail", "--getmaildir", home, "--rcfile", rcfile], timeout=50)
        fetched = {}
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(maildir, sub)):
                with open(os.path.join(maildir, sub, name), "rb") as f:
                    fetched[name] = f.read()
        return fetched

    def check_fetch(self, retriever: str, port: int):
        big = DOT_HEADER + dot_block(300_000) + b"\r\n"  # > 256 KiB: streamed
        messages = [MESSAGE, DOTS, big, b"Subject: no end\r\n\r\n.last line"]

        def run():
            self.append(*messages)
            fetched = self.fetch_with_getmail(retriever, port)
            self.assertEqual(len(fetched), len(messages))
            # getmail adds its own header fields (Delivered-To, Received...) on top and
            # writes LF line ends: the message itself must be what follows them.
            got = sorted(_lf(content) for content in fetched.values())
            for message in messages:
                expected = _lf(pop3_form(message))
                matches = [content for content in got if content.endswith(b"\n" + expected)]
                self.assertEqual(len(matches), 1, (expected[:60], [g[:300] for g in got]))
            # delete = true: the maildrop is empty now (seen from IMAP and POP3).
            self.assertEqual(self.pop().stat(), (0, 0))

        return self.in_thread(run)

    def test_getmail_over_pop3(self):
        return self.check_fetch("SimplePOP3Retriever", self.pop3_port)

    def test_getmail_over_pop3s(self):
        return self.check_fetch("SimplePOP3SSLRetriever", port_of(self.appliance, "pop3s"))


def _lf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")
