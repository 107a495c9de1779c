"""RFC 5322 §3.2 lexical tokens (atoms, quoted strings, comments, domains) for header values.

A small cursor over one unfolded-or-folded header value, held as a latin-1 ``str`` so every
byte maps to one character.  Its rules follow Dovecot 2.3's ``rfc822-parser.c`` closely,
including how it recovers from broken input, because the ENVELOPE and BODYSTRUCTURE answers
built on it are compared byte for byte with Dovecot's.

Each ``parse_*`` method returns like its C model: ``-1`` on a syntax error, ``0`` when the
value is used up, ``1`` when more input follows.
"""

from __future__ import annotations

import re

# RFC 5322 §3.2.3 atext; 8-bit bytes count as atext (RFC 6532).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff"
_ATEXT_RUN = re.compile(f"[{_ATEXT}]+")
_ATEXT_OR_DOT_RUN = re.compile(f"[{_ATEXT}.]*")
# RFC 2045 §5.1 token: atext without the tspecials "/", "=" and "?", plus ".".
_TOKEN_RUN = re.compile(r"[A-Za-z0-9!#$%&'*+\-^_`{|}~\x80-\xff.]*")
_WSP_RUN = re.compile(r"[ \t\r\n]*")


def is_atext(char: str) -> bool:
    return bool(char) and _ATEXT_RUN.match(char) is not None


class Cursor:
    """Position in a header value; ``comment`` keeps the text of the last comment skipped."""

    __slots__ = ("s", "i", "n", "comment")

    def __init__(self, s: str, keep_comments: bool = False):
        self.s = s
        self.i = 0
        self.n = len(s)
        self.comment: list[str] | None = [] if keep_comments else None

    def peek(self) -> str:
        """The current character, or "" at the end (like reading C's terminating NUL)."""
        return self.s[self.i] if self.i < self.n else ""

    def skip_comment(self) -> int:
        """Skip a (possibly nested) comment starting at "(" (RFC 5322 §3.2.2)."""
        s = self.s
        if self.comment is not None:
            self.comment.clear()
        self.i += 1
        start = self.i
        level = 1
        while self.i < self.n:
            c = s[self.i]
            if c == "(":
                level += 1
            elif c == ")":
                level -= 1
                if level == 0:
                    if self.comment is not None:
                        self.comment.append(s[start : self.i])
                    self.i += 1
                    return 1 if self.i < self.n else 0
            elif c == "\\":
                if self.comment is not None:
                    self.comment.append(s[start : self.i])
                start = self.i + 1
                self.i += 1
                if self.i >= self.n:
                    return -1
            self.i += 1
        return -1

    def skip_lwsp(self) -> int:
        """Skip folding white space and comments (CFWS)."""
        s = self.s
        while True:
            self.i = _WSP_RUN.match(s, self.i).end()
            if self.i < self.n and s[self.i] == "(":
                if self.skip_comment() < 0:
                    return -1
                continue
            return 1 if self.i < self.n else 0

    def parse_atom(self, out: list[str]) -> int:
        m = _ATEXT_RUN.match(self.s, self.i)
        if m is None:
            return -1
        out.append(m.group())
        self.i = m.end()
        return self.skip_lwsp() if self.i < self.n else 0

    def parse_dot_atom(self, out: list[str]) -> int:
        """dot-atom, allowing CFWS around the dots as RFC 822 did."""
        if _ATEXT_RUN.match(self.s, self.i) is None:
            return -1
        while True:
            # After a dot Dovecot accepts an empty atom ("a.@b"), so does this.
            m = _ATEXT_RUN.match(self.s, self.i)
            if m is not None:
                out.append(m.group())
                self.i = m.end()
            if self.i >= self.n:
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.s[self.i] != ".":
                return 1
            self.i += 1
            out.append(".")
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret

    def parse_token(self, out: list[str]) -> int:
        """An RFC 2045 token (possibly empty), then CFWS."""
        m = _TOKEN_RUN.match(self.s, self.i)
        out.append(m.group())
        self.i = m.end()
        return self.skip_lwsp() if self.i < self.n else 0

    def parse_quoted_string(self, out: list[str]) -> int:
        """A quoted string at '"': escapes removed, folding (CR)LF dropped."""
        s = self.s
        self.i += 1
        start = self.i
        while self.i < self.n:
            c = s[self.i]
            if c == '"':
                out.append(s[start : self.i])
                self.i += 1
                return self.skip_lwsp()
            if c == "\n":
                end = self.i
                if end > start and s[end - 1] == "\r":
                    end -= 1
                out.append(s[start:end])
                start = self.i + 1
            elif c == "\\":
                self.i += 1
                if self.i >= self.n:
                    return -1
                out.append(s[start : self.i - 1])
                start = self.i
            self.i += 1
        return -1

    def _parse_atom_or_dot(self, out: list[str]) -> int:
        m = _ATEXT_OR_DOT_RUN.match(self.s, self.i)
        out.append(m.group())
        self.i = m.end()
        return self.skip_lwsp() if self.i < self.n else 0

    def parse_phrase(self, out: list[str]) -> int:
        """phrase / obs-phrase: words joined by single spaces (RFC 5322 §3.2.5, §4.1)."""
        if self.i >= self.n:
            return 0
        if self.s[self.i] == ".":
            return -1
        while True:
            if self.s[self.i] == '"':
                ret = self.parse_quoted_string(out)
            else:
                ret = self._parse_atom_or_dot(out)
            if ret <= 0:
                return ret
            c = self.s[self.i]
            if c != '"' and c != "." and not is_atext(c):
                break
            out.append(" ")
        return self.skip_lwsp()

    def _parse_domain_literal(self, out: list[str]) -> int:
        s = self.s
        start = self.i
        while self.i < self.n:
            c = s[self.i]
            if c == "\\":
                self.i += 1
                if self.i >= self.n:
                    break
            elif c == "]":
                self.i += 1
                out.append(s[start : self.i])
                return self.skip_lwsp()
            self.i += 1
        return -1

    def parse_domain(self, out: list[str]) -> int:
        """At "@": a dot-atom or a domain literal (RFC 5322 §3.4.1)."""
        self.i += 1
        if self.skip_lwsp() <= 0:
            return -1
        if self.s[self.i] == "[":
            return self._parse_domain_literal(out)
        return self.parse_dot_atom(out)
