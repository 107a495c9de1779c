"""Real-world-shaped messages for the MIME scanner tests (RFC 5322, RFC 2045/2046, RFC 2047).

``CORPUS`` maps a name to the raw bytes of one message, well-formed and broken alike, as mail
clients and spam send them.  ``BigMultipart`` streams a large multipart message in chunks
without ever holding it, and knows where each of its parts starts and ends.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass


def crlf(text: str) -> bytes:
    """A message written with ``\\n`` line ends, as CRLF bytes (UTF-8 for the 8-bit ones)."""
    return text.replace("\n", "\r\n").encode("utf-8")


def _b64(data: bytes) -> str:
    """MIME base64: lines of 76 characters (RFC 2045 §6.8)."""
    return base64.encodebytes(data).decode("ascii")


def _noise(seed: str, size: int) -> bytes:
    """Deterministic binary content (like a PDF or PNG: every byte value occurs)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


PLAIN_ASCII = crlf(
    """Return-Path: <alice@example.org>
Received: from mx.example.org (mx.example.org [192.0.2.10])
\tby mail.example.net with ESMTPS id 4F2A1B3C
\tfor <bob@example.net>; Mon, 7 Feb 1994 21:52:25 -0800
Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
From: Alice Example <alice@example.org>
To: Bob <bob@example.net>
Subject: Lunch on Friday?
Message-ID: <B27397-0100000@example.org>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

Hi Bob,

are we still on for lunch on Friday?  The usual place at noon.

--\x20
Alice
"""
)

UTF8_BODY = crlf(
    """Date: Tue, 14 Mar 2023 09:15:00 +0100
From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>
To: anna@example.de
Subject: =?utf-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?=
Message-ID: <20230314081500.GA1234@example.de>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: 8bit

Hallo Anna,

viele Grüße aus München! Das Wetter ist schön, die Straßen sind voll.
Ελληνικά, 日本語, emoji 😀.

Jörg
"""
)

ENCODED_WORDS = crlf(
    """Date: Wed, 01 Nov 2023 18:03:44 -0400
From: =?ISO-8859-1?Q?Andr=E9_Pirard?= <PIRARD@vm1.ulg.ac.be>
Sender: "Mailing list" <list-bounces@lists.example.com>
Reply-To: "Pirard, Andre" <andre@example.be>, list@lists.example.com
To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>,
 "Nathaniel \\"Nat\\" Borenstein" <nsb@thumper.bellcore.com>,
 =?ISO-8859-1?Q?Olle_J=E4rnefors?= <ojarnef@admin.kth.se>
Cc: "Doe, John" <john.doe@example.com> (work), jane@example.com (Jane Roe)
Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=
 =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=
In-Reply-To: <CAF=abc123@mail.example.com>
Message-ID: <20231101220344.5E1C2@lists.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Caf=E9 cr=E8me, na=EFve fa=E7ade.=20
Soft line break here =
continues on the same line.
"""
)

_PDF = _noise("report.pdf", 3000)
_PNG = _noise("logo.png", 700)

MIXED_ALTERNATIVE = crlf(
    """Date: Thu, 16 Nov 2023 10:30:00 +0000
From: Carol <carol@example.com>
To: Dave <dave@example.com>, Eve <eve@example.com>
Cc: Frank <frank@example.com>
Bcc: audit@example.com
Subject: Quarterly report
Message-ID: <report-q3@example.com>
In-Reply-To: <question-q3@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="===============1234567890=="

This is a multi-part message in MIME format.

--===============1234567890==
Content-Type: multipart/alternative;
 boundary="----=_NextPart_001_0012_01D9A1B2.3C4D5E60"

------=_NextPart_001_0012_01D9A1B2.3C4D5E60
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Hi all,

attached is the Q3 report.  Revenue grew by 12 % =E2=80=94 see page 3.

Carol
------=_NextPart_001_0012_01D9A1B2.3C4D5E60
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hi all,</p><p>attached is the Q3 report.  Revenue grew by 1=
2 % =E2=80=94 see page 3.</p><p>Carol</p></body></html>

------=_NextPart_001_0012_01D9A1B2.3C4D5E60--

--===============1234567890==
Content-Type: application/pdf; name="Q3 report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="Q3 report.pdf"; size=3000
Content-Description: The report
Content-Language: en-GB

"""
    + _b64(_PDF)
    + """
--===============1234567890==
Content-Type: image/png
Content-Transfer-Encoding: BASE64
Content-ID: <logo@example.com>
Content-Disposition: inline
Content-Language: en, de
Content-Location: http://www.example.com/logo.png
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

"""
    + _b64(_PNG)
    + """--===============1234567890==--

Epilogue: ignored by everyone.
"""
)

FORWARDED = crlf(
    """Date: Fri, 17 Nov 2023 08:00:00 +0100
From: Grace <grace@example.org>
To: Heidi <heidi@example.org>
Subject: Fwd: Quarterly report
Message-ID: <fwd-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer-boundary

--outer-boundary
Content-Type: text/plain; charset=us-ascii

See below.

--outer-boundary
Content-Type: message/rfc822
Content-Disposition: inline

Date: Thu, 16 Nov 2023 10:30:00 +0000
From: Carol <carol@example.com>
To: Grace <grace@example.org>
Subject: Quarterly report
Message-ID: <report-q3-grace@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="inner:boundary"

--inner:boundary
Content-Type: text/plain; charset=utf-8

The report is attached.
--inner:boundary
Content-Type: text/html; charset=utf-8

<p>The report is attached.</p>
--inner:boundary--

--outer-boundary--
"""
)

DIGEST = crlf(
    """Date: Sat, 18 Nov 2023 00:00:00 +0000
From: digest-owner@lists.example.net
To: subscriber@example.com
Subject: List Digest, Vol 12, Issue 3
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="digest-outer"

--digest-outer
Content-Type: text/plain; charset="us-ascii"
Content-Description: List Digest, Vol 12, Issue 3

Today's Topics:

   1. first topic
   2. second topic

--digest-outer
Content-Type: multipart/digest; boundary="digest-inner"

--digest-inner

Date: Fri, 17 Nov 2023 11:00:00 +0000
From: Ivan <ivan@example.com>
Subject: first topic

First message text.

--digest-inner
Content-Type: message/rfc822

Date: Fri, 17 Nov 2023 12:00:00 +0000
From: Judy <judy@example.com>
Subject: second topic
Content-Type: text/plain; charset=us-ascii

Second message text.

--digest-inner
Content-Type: text/plain

Not a message: a plain note inside the digest.
--digest-inner--

--digest-outer--
"""
)

BINARY_PART = (
    crlf(
        """Date: Sun, 19 Nov 2023 12:00:00 +0000
From: mallory@example.com
To: trent@example.com
Subject: binary
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=bin

--bin
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

"""
    )
    + b"\x00\x01\x02\xff\xfe\r\rbare CR, \x00NUL, \x80\x81 and a lone LF\n--not-the-boundary\r\n"
    + b"\xde\xad\xbe\xef"
    + crlf(
        """
--bin
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße
--bin--
"""
    )
)

GROUP_ADDRESS = crlf(
    """Date: Mon, 20 Nov 2023 09:00:00 -0800
From: Ops Team <ops@example.com>
To: undisclosed-recipients:;
Cc: Managers: Peggy <peggy@example.com>, victor@example.com;, walter@example.com
Bcc: Empty Group:;
Subject: Maintenance window
Message-ID: <maint@example.com>

Tonight 22:00-23:00.
"""
)

ADDRESSES = crlf(
    """Date: 21 Nov 2023 09:00 GMT
From: "Smith, Bob" <@relay1.example,@relay2.example:bob@example.com>
Sender: "quoted local"@example.com
Reply-To: nodomain
To: Ursula (comment) <ursula@example.com>, \
"very.(),:;<>[]\\".VERY.\\"very@\\\\ \\"very\\".unusual"@strange.example.com
Cc: <>, "only name" <>, @missing-mailbox.example
Subject: addresses of every kind
Message-ID: <addr@example.com>

.
"""
)

MISSING_FINAL_BOUNDARY = crlf(
    """Date: Tue, 21 Nov 2023 10:00:00 +0000
From: truncated@example.com
To: someone@example.com
Subject: cut off
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="cut"

--cut
Content-Type: text/plain

first part
--cut
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g
ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB
"""
)

NO_BLANK_LINE = crlf(
    """Date: Wed, 22 Nov 2023 10:00:00 +0000
From: sloppy@example.com
To: someone@example.com
Subject: no separator
This line is not a header field: the body starts without a blank line.
Second line of the body.
"""
)

HEADER_ONLY = crlf(
    """Date: Thu, 23 Nov 2023 10:00:00 +0000
From: headers@example.com
To: someone@example.com
Subject: nothing but headers
"""
)

BARE_LF = (
    """Date: Fri, 24 Nov 2023 10:00:00 +0000
From: unix@example.com
To: someone@example.com
Subject: bare LF line ends
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="lf"

preamble
--lf
Content-Type: text/plain

plain
text
--lf
Content-Type: text/html

<p>html</p>
--lf--
"""
).encode("ascii")

GARBAGE_PARAMETERS = crlf(
    """Date: Sat, 25 Nov 2023 10:00:00 +0000
From: weird@example.com
To: someone@example.com
Subject: garbage parameters
MIME-Version: 1.0
Content-Type: multipart/mixed; ; foo; boundary=garbage; =bar; x="unterminated

--garbage
Content-Type: text/plain; charset=; format=flowed; delsp
Content-Transfer-Encoding: 7bit

first
--garbage
Content-Type: text
Content-Disposition: attachment; filename*=UTF-8''na%C3%AFve%20file.txt

second
--garbage
Content-Type: /
Content-Disposition: ; filename=x

third
--garbage
Content-Type: application/x-thing; name*0="long"; name*1="name.bin"
Content-Transfer-Encoding: x-unknown

fourth
--garbage--
"""
)

QUOTED_BOUNDARY = crlf(
    """Date: Sun, 26 Nov 2023 10:00:00 +0000
From: quoting@example.com
To: someone@example.com
Subject: boundary in a quoted string
MIME-Version: 1.0
Content-Type: multipart/mixed;
 boundary="=_a;b=c (not a comment) \\"q\\""; charset=us-ascii

--=_a;b=c (not a comment) "q"
Content-Type: text/plain; name="--=_a;b=c (not a comment) \\"q\\""

This line mentions --=_a;b=c (not a comment) "q" but not at the start.
--=_a;b=c (not a comment) "q"
Content-Type: text/plain

second
--=_a;b=c (not a comment) "q"--
"""
)

LONG_HEADER_LINES = crlf(
    "Date: Mon, 27 Nov 2023 10:00:00 +0000\n"
    "From: long@example.com\n"
    "To: " + ",\n ".join(f"recipient{i}@example.com" for i in range(60)) + "\n"
    "Subject: " + " ".join(f"word{i}" for i in range(400)) + "\n"
    "References: " + "\n ".join(f"<ref{i}.{'x' * 40}@example.com>" for i in range(50)) + "\n"
    "X-Long: " + "y" * 5000 + "\n"
    "\n"
    "short body\n"
)

EMPTY = b""

NO_BOUNDARY_PARAMETER = crlf(
    """Date: Tue, 28 Nov 2023 10:00:00 +0000
From: noboundary@example.com
To: someone@example.com
Subject: multipart without a boundary
MIME-Version: 1.0
Content-Type: multipart/mixed

--something
Content-Type: text/plain

text
--something--
"""
)

NO_TRAILING_NEWLINE = crlf(
    """From: nonewline@example.com
Subject: last line has no line end
Content-Type: text/plain; charset=us-ascii

one
two"""
)

DUPLICATE_HEADERS = crlf(
    """Date: Wed, 29 Nov 2023 10:00:00 +0000
Date: Thu, 30 Nov 2023 10:00:00 +0000
From: first@example.com
From: second@example.com
Subject:   padded subject  \x20
Subject: second subject
To:\x20
Message-ID: <dup@example.com>
Content-Type: text/plain;
\tcharset="us-ascii"
Content-Transfer-Encoding: 7BIT

body
"""
)

ENCAPSULATED_HEADER_ONLY = crlf(
    """From: wrapper@example.com
To: someone@example.com
Subject: an attached message with no body
MIME-Version: 1.0
Content-Type: message/rfc822

From: inner@example.com
Subject: inner, headers only
"""
)

PARAMETER_ENCODINGS = crlf(
    """From: params@example.com
Subject: RFC 2231 parameters
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="p"

--p
Content-Type: application/octet-stream;
 name*0*=UTF-8''%E6%97%A5%E6%9C%AC;
 name*1*=%E8%AA%9E.txt
Content-Disposition: attachment;
 filename="=?UTF-8?B?5pel5pys6KqeLnR4dA==?="
Content-Transfer-Encoding: base64

5pel5pys6Kqe
--p
Content-Type: text/plain; charset=iso-8859-1; name="caf\xe9.txt"
Content-Transfer-Encoding: 8bit

caf\xe9
--p--
"""
).replace("\xe9".encode(), b"\xe9")  # ISO-8859-1, as declared

NESTED_PREFIX_BOUNDARY = crlf(
    """From: nested@example.com
Subject: inner boundary extends the outer one
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: multipart/related; boundary="b2"; type="text/html"

--b2
Content-Type: text/html

<img src="cid:x">
--b2
Content-Type: image/gif
Content-ID: <x>
Content-Transfer-Encoding: base64

R0lGODlhAQABAAAAACw=
--b
Content-Type: text/plain

the outer boundary closed the inner multipart
--b--
"""
)

MESSAGE_GLOBAL = crlf(
    """From: global@example.com
Subject: message/global
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="g"

--g
Content-Type: message/global

From: Ünïcode <ü@example.com>
Subject: Grüße

Hallo.
--g--
"""
)

NESTED_FORWARD = crlf(
    """From: forwarder@example.org
Subject: Fwd: Fwd: minutes
Date: Wed, 29 Nov 2023 08:00:00 +0100
MIME-Version: 1.0
Content-Type: message/rfc822

From: first-forwarder@example.org
Subject: Fwd: minutes
Content-Type: message/rfc822

From: secretary@example.org
Subject: minutes
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=z

--z

The minutes are attached.
--z
Content-Type: message/rfc822

Subject: attached note

deep
--z--
"""
)

EMPTY_MULTIPART = crlf(
    """From: nothing@example.com
Subject: a multipart that closes at once
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

--b--
"""
)

HEADER_CUT_BY_BOUNDARY = crlf(
    """From: cut@example.com
Subject: part headers cut short
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain
X-Header: no blank line before the next delimiter
--b
Content-Type: text/plain

--b
Content-Type: message/rfc822

--b

--b
Content-Type: text/html

two
--b--
"""
)

BOUNDARY_LINE_GARBAGE = crlf(
    """From: junk@example.com
Subject: delimiters with junk
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

preamble
--b  junk after the boundary
Content-Type: text/plain

one
--bxyz
no header here: "--bxyz" starts with "--b", a delimiter (RFC 2046 forbids such lines)
--b--  trailing
epilogue
--b
after the close delimiter: not a delimiter any more
"""
)

NO_MIME_VERSION = crlf(
    """From: old-mailer@example.com
Subject: no MIME-Version
Content-Type: multipart/alternative; boundary=x
Content-Transfer-Encoding: 7bit

--x
Content-Type: text/html

<b>hi</b>
--x--
"""
)

CORPUS: dict[str, bytes] = {
    "plain_ascii": PLAIN_ASCII,
    "utf8_body": UTF8_BODY,
    "encoded_words": ENCODED_WORDS,
    "mixed_alternative": MIXED_ALTERNATIVE,
    "forwarded": FORWARDED,
    "digest": DIGEST,
    "binary_part": BINARY_PART,
    "group_address": GROUP_ADDRESS,
    "addresses": ADDRESSES,
    "missing_final_boundary": MISSING_FINAL_BOUNDARY,
    "no_blank_line": NO_BLANK_LINE,
    "header_only": HEADER_ONLY,
    "bare_lf": BARE_LF,
    "garbage_parameters": GARBAGE_PARAMETERS,
    "quoted_boundary": QUOTED_BOUNDARY,
    "long_header_lines": LONG_HEADER_LINES,
    "empty": EMPTY,
    "no_boundary_parameter": NO_BOUNDARY_PARAMETER,
    "no_trailing_newline": NO_TRAILING_NEWLINE,
    "duplicate_headers": DUPLICATE_HEADERS,
    "encapsulated_header_only": ENCAPSULATED_HEADER_ONLY,
    "parameter_encodings": PARAMETER_ENCODINGS,
    "nested_prefix_boundary": NESTED_PREFIX_BOUNDARY,
    "message_global": MESSAGE_GLOBAL,
    "nested_forward": NESTED_FORWARD,
    "empty_multipart": EMPTY_MULTIPART,
    "header_cut_by_boundary": HEADER_CUT_BY_BOUNDARY,
    "boundary_line_garbage": BOUNDARY_LINE_GARBAGE,
    "no_mime_version": NO_MIME_VERSION,
}


def typical_message(size: int = 10 * 1024) -> bytes:
    """A typical delivery of about ``size`` bytes: a dozen Received lines, text + HTML."""
    received = "".join(
        f"Received: from relay{i}.example.net (relay{i}.example.net [192.0.2.{i}])\n"
        f"\tby relay{i + 1}.example.net (Postfix) with ESMTPS id {i:08X}\n"
        f"\tfor <bob@example.net>; Mon, 27 Nov 2023 10:00:{i:02d} +0000\n"
        for i in range(8)
    )
    head = (
        received + "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; h=from:to:subject;\n"
        "\tbh=" + "A" * 44 + ";\n\tb=" + "B" * 300 + "\n"
        "Date: Mon, 27 Nov 2023 10:00:00 +0000\n"
        "From: Alice Example <alice@example.org>\n"
        "To: Bob <bob@example.net>, carol@example.net\n"
        "Subject: =?utf-8?q?Weekly_update?=\n"
        "Message-ID: <weekly-48@example.org>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="alt-48"\n'
        "\n"
    )
    line = "The quick brown fox jumps over the lazy dog; the weekly update follows.\n"
    room = max(size - len(head) - 300, 200) // 2
    text = line * (room // len(line))
    html = "<p>" + text.replace("\n", "</p>\n<p>") + "</p>\n"
    message = (
        head + "--alt-48\nContent-Type: text/plain; charset=utf-8\n\n" + text + "--alt-48\n"
        "Content-Type: text/html; charset=utf-8\n\n" + html + "--alt-48--\n"
    )
    return crlf(message)


_WORDS = ["foo", "bar", "Grüße", "a=3D", "x", "--", "- -", "--b", "--bb", "--b--", "\x00", ""]


def random_message(rng: random.Random, depth: int = 0) -> bytes:
    """A random, often broken, MIME message: nested multiparts with reused or prefix-sharing
    boundaries, missing close delimiters, headers cut short, embedded messages, digests.
    Line ends are CRLF, or bare LF for about one message in five."""
    text = _random_message(rng, depth)
    if rng.random() < 0.2:
        text = text.replace("\r\n", "\n")
    return text.encode("utf-8")


def _random_message(rng: random.Random, depth: int) -> str:
    fields = []
    if rng.random() < 0.8:
        fields.append("From: " + rng.choice(["a@b.c", '"X Y" <x@y.z>', "grp: a@b.c;", "<<x>>"]))
    if rng.random() < 0.7:
        fields.append("Subject: " + rng.choice(["hi", "  spaced  ", "Grüße", "=?utf-8?q?x?="]))
    if rng.random() < 0.7:
        fields.append("MIME-Version: 1.0")
    head = "\r\n".join(fields) + "\r\n" if fields else ""
    return head + _random_part(rng, depth)


def _random_part(rng: random.Random, depth: int) -> str:
    kind = rng.random()
    fields = []
    if rng.random() < 0.2:
        fields.append("Content-Transfer-Encoding: " + rng.choice(["base64", "8bit", "x y"]))
    if depth < 3 and kind < 0.35:
        boundary = rng.choice(["b", "bb", "b2", "=_x", "outer"]) + rng.choice(["", "1", "2"])
        subtype = rng.choice(["mixed", "alternative", "digest"])
        fields.append(f'Content-Type: multipart/{subtype}; boundary="{boundary}"')
        body = "preamble\r\n" if rng.random() < 0.3 else ""
        for _ in range(rng.randint(0, 3)):
            body += f"--{boundary}" + rng.choice(["", "", " ", "  junk"]) + "\r\n"
            if subtype == "digest" and rng.random() < 0.5:
                body += "\r\n" + _random_message(rng, depth + 1) + "\r\n"
            else:
                body += _random_part(rng, depth + 1) + "\r\n"
        if rng.random() < 0.8:
            body += f"--{boundary}--\r\n"
        if rng.random() < 0.3:
            body += "epilogue\r\n"
    elif depth < 3 and kind < 0.45:
        fields.append("Content-Type: message/rfc822")
        body = _random_message(rng, depth + 1)
    else:
        if rng.random() < 0.8:
            fields.append("Content-Type: " + rng.choice(["text/plain", "text/html", "image/png"]))
        lines = [
            " ".join(rng.choices(_WORDS, k=rng.randint(0, 4))) for _ in range(rng.randint(0, 4))
        ]
        body = "\r\n".join(lines)
    rng.shuffle(fields)
    separator = "\r\n\r\n" if rng.random() < 0.93 else "\r\n"
    return ("\r\n".join(fields) + separator if fields else "\r\n") + body


@dataclass(frozen=True)
class BigPart:
    header_start: int
    body_start: int
    body_end: int


class BigMultipart:
    """A multipart/mixed message of ``parts`` base64 attachments of ``part_size`` body bytes each.

    ``chunks(size)`` yields the message without holding more than one chunk; ``layout`` gives
    the offsets every part must be found at, computed from the parameters alone.
    """

    boundary = b"big-boundary-7d1c"

    def __init__(self, parts: int = 4, part_size: int = 50 * 1024 * 1024):
        self.line = base64.b64encode(_noise("big", 57)) + b"\r\n"  # 78 bytes, like MIME base64
        self.lines_per_part = part_size // len(self.line)
        self.parts = parts
        self.head = crlf(
            "From: big@example.com\nTo: someone@example.com\nSubject: big\nMIME-Version: 1.0\n"
            f'Content-Type: multipart/mixed; boundary="{self.boundary.decode()}"\n\n'
        )
        self.part_head = crlf(
            "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        )

    @property
    def body_size(self) -> int:
        """Octets in each part's body (the CRLF before the next boundary is not the body's)."""
        return self.lines_per_part * len(self.line) - 2

    @property
    def layout(self) -> list[BigPart]:
        result = []
        offset = len(self.head)
        for _ in range(self.parts):
            delimiter = b"--" + self.boundary + b"\r\n"
            header_start = offset + len(delimiter)
            body_start = header_start + len(self.part_head)
            result.append(BigPart(header_start, body_start, body_start + self.body_size))
            offset = body_start + self.body_size + 2
        return result

    @property
    def total_size(self) -> int:
        return self.layout[-1].body_end + 2 + len(b"--" + self.boundary + b"--\r\n")

    def chunks(self, size: int = 256 * 1024) -> Iterator[bytes]:
        def pieces() -> Iterator[bytes]:
            yield self.head
            block = self.line * 1024
            for _ in range(self.parts):
                yield b"--" + self.boundary + b"\r\n" + self.part_head
                full, rest = divmod(self.lines_per_part, 1024)
                for _ in range(full):
                    yield block
                yield self.line * rest
            yield b"--" + self.boundary + b"--\r\n"

        pending = b""
        for piece in pieces():
            pending += piece
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending
