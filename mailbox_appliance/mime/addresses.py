"""Address lists for the IMAP ENVELOPE (RFC 5322 §3.4, RFC 3501 §7.4.2).

``parse_address_list`` turns the raw value of a From/To/Cc/... field into the address
structures ENVELOPE carries: ``(name, adl, mailbox, host)``, any of them ``None`` for NIL.
Groups follow RFC 3501: ``(None, None, "group name", None)`` opens a group and
``(None, None, None, None)`` closes it.

Broken input is handled the way Dovecot 2.3 handles it (``message-address.c`` with
FILL_MISSING), so the answers match the reference server's: a missing local part becomes
``MISSING_MAILBOX``, a missing domain ``MISSING_DOMAIN`` (a NIL host would announce a group),
an unparsable angle address gets the host ``SYNTAX_ERROR`` and ends the list.  A comment
after a bare addr-spec ("jane@example.com (Jane Roe)") becomes the display name.  Encoded
words (RFC 2047) are left as they are: clients decode them.
"""

from __future__ import annotations

from mailbox_appliance.mime.rfc822 import Cursor

Address = tuple[str | None, str | None, str | None, str | None]

MISSING_MAILBOX = "MISSING_MAILBOX"
MISSING_DOMAIN = "MISSING_DOMAIN"
SYNTAX_ERROR = "SYNTAX_ERROR"
INVALID_ROUTE = "INVALID_ROUTE"


class _Parser:
    __slots__ = ("c", "out", "name", "route", "mailbox", "domain", "invalid")

    def __init__(self, value: str):
        self.c = Cursor(value, keep_comments=True)
        self.out: list[Address] = []
        self._reset()

    def _reset(self) -> None:
        self.name = self.route = self.mailbox = self.domain = None
        self.invalid = False

    def _add(self) -> None:
        self.out.append((self.name, self.route, self.mailbox, self.domain))
        self._reset()

    def _add_fixed(self) -> None:
        if self.mailbox is None:
            self.mailbox = MISSING_MAILBOX
        if not self.domain:
            self.domain = MISSING_DOMAIN
        self._add()

    def _local_part(self, out: list[str]) -> int:
        """local-part, tolerating dots in odd places (obs-local-part)."""
        c = self.c
        out.clear()
        if c.peek() == '"':
            ret = c.parse_quoted_string(out)
        else:
            ret = -1
            while True:
                while c.peek() == ".":
                    out.append(".")
                    c.i += 1
                    if c.i >= c.n:
                        self.mailbox = "".join(out)
                        return 0
                    ret = 1
                if c.peek() == "@":
                    break
                ret = c.parse_atom(out)
                if not (ret > 0 and c.peek() == "."):
                    break
        if ret < 0:
            return -1
        self.mailbox = "".join(out)
        return ret

    def _domain(self) -> int:
        out: list[str] = []
        ret = self.c.parse_domain(out)
        if ret < 0:
            return -1
        self.domain = "".join(out)
        return ret

    def _domain_list(self) -> int:
        """obs-domain-list of a route-addr: "@a,@b" (RFC 5322 §4.4)."""
        c = self.c
        out: list[str] = []
        while True:
            if c.i >= c.n:
                return 0
            if c.s[c.i] != "@":
                break
            if out:
                out.append(",")
            out.append("@")
            ret = c.parse_domain(out)
            if ret <= 0:
                return ret
            while c.skip_lwsp() > 0 and c.s[c.i] == ",":
                c.i += 1
        self.route = "".join(out)
        return 1

    def _angle_addr(self) -> int:
        c = self.c
        c.i += 1
        if c.skip_lwsp() <= 0:
            return -1
        if c.s[c.i] == "@":
            if self._domain_list() > 0 and c.peek() == ":":
                c.i += 1
            else:
                self.route = INVALID_ROUTE
                if c.i >= c.n:
                    return -1
            if c.skip_lwsp() <= 0:
                return -1
        if c.s[c.i] != ">":
            if self._local_part([]) <= 0:
                return -1
            if c.s[c.i] == "@" and self._domain() <= 0:
                return -1
        if c.peek() != ">":
            return -1
        c.i += 1
        return c.skip_lwsp()

    def _name_addr(self) -> int:
        c = self.c
        out: list[str] = []
        if c.parse_phrase(out) <= 0 or c.s[c.i] != "<":
            return -1
        self.name = "".join(out) or None
        if self._angle_addr() < 0:
            self.domain = SYNTAX_ERROR
            self.invalid = True
        return 1 if c.i < c.n else 0

    def _addr_spec(self) -> int:
        c = self.c
        c.comment.clear()
        quoted = c.peek() == '"'
        local: list[str] = []
        ret = self._local_part(local)
        ret2 = -2
        if ret <= 0:
            self.invalid = True
        if ret != 0 and c.i < c.n and c.s[c.i] == "@":
            ret2 = self._domain()
            if ret2 <= 0:
                ret = ret2
        if c.comment and "".join(c.comment):
            self.name = "".join(c.comment)
        elif ret2 == -2:
            # "user" alone is a mailbox without a domain; "user more words" is a name.
            local.append(" ")
            before = len("".join(local))
            c.parse_phrase(local)
            text = "".join(local)
            if len(text) != before:
                self.mailbox = None
                self.name = text
            elif not quoted:
                self.domain = ""
            self.invalid = True
            ret = -1
        return ret

    def _mailbox(self) -> int:
        c = self.c
        start = c.i
        ret = self._name_addr()
        if ret < 0:
            c.i = start
            ret = self._addr_spec()
            if self.invalid and self.name is None and self.mailbox is not None:
                if self.domain is None:
                    self.name, self.mailbox = self.mailbox, None
        if ret < 0:
            self.invalid = True
        self._add_fixed()
        return ret

    def _group(self) -> int:
        c = self.c
        out: list[str] = []
        if c.parse_phrase(out) <= 0 or c.s[c.i] != ":":
            return -1
        c.i += 1
        ret = c.skip_lwsp()
        self.mailbox = "".join(out)
        self._add()
        if ret > 0 and c.s[c.i] != ";":
            while True:
                self._mailbox()
                if c.i >= c.n or c.s[c.i] != ",":
                    break
                c.i += 1
                if c.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if c.i >= c.n or c.s[c.i] != ";":
                ret = -1
            else:
                c.i += 1
                ret = c.skip_lwsp()
        self._add()
        return 0 if ret == 0 else 1

    def _address(self) -> int:
        start = self.c.i
        ret = self._group()
        if ret < 0:
            self.c.i = start
            self._reset()
            ret = self._mailbox()
        return ret

    def parse(self) -> list[Address]:
        c = self.c
        if c.skip_lwsp() <= 0:
            return self.out
        while True:
            if self._address() == 0:
                break
            if c.i >= c.n or c.s[c.i] != ",":
                break
            c.i += 1
            ret = c.skip_lwsp()
            if ret <= 0:
                if ret < 0:  # ends with garbage
                    self._add_fixed()
                break
        return self.out


def parse_address_list(value: str) -> list[Address]:
    """The addresses of one header field value (raw, latin-1; folding allowed)."""
    return _Parser(value).parse()
