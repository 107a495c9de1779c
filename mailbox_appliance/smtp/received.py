"""Trace header fields (RFC 5321 §4.4): the Return-Path and Received lines a message gets here.

The Received line names the client as it greeted and as its IP address, the protocol with the
RFC 3848 / RFC 6531 keyword (ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP...), the TLS version and
cipher, and the authenticated user, so a recipient can see how the message came in.
"""

from __future__ import annotations

import email.utils
import re

_UNSAFE = re.compile(r"[^\x21-\x7e]")


def protocol_keyword(esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """RFC 3848 §1 and RFC 6531 §3.7.3 ``with`` keywords."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _clean(text: str, limit: int = 255) -> str:
    """A client-supplied word made safe for a header: no spaces, controls or parentheses."""
    return _UNSAFE.sub("?", text)[:limit].replace("(", "?").replace(")", "?") or "unknown"


def return_path(sender: str) -> bytes:
    """RFC 5321 §4.4: added by the final delivery; ``<>`` for the null sender."""
    return f"Return-Path: <{sender}>\r\n".encode()


def received(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: str | None,
    account: str | None,
    recipient: str | None,
    timestamp: float | None = None,
) -> bytes:
    """One Received field, folded over several lines; ``recipient`` only when there is one."""
    parts = [
        f"Received: from {_clean(helo)} ([{client_ip}])",
        f"\tby {hostname} (mailbox-appliance) with {protocol} id {queue_id}",
    ]
    if tls:
        parts.append(f"\t({tls})")
    if account:
        parts.append(f"\t(authenticated as {account})")
    if recipient:
        parts.append(f"\tfor <{recipient}>")
    parts[-1] += ";"
    parts.append("\t" + email.utils.formatdate(timestamp, localtime=False))
    return ("\r\n".join(parts) + "\r\n").encode("utf-8")


def tls_description(transport) -> str | None:
    """``using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`` from a TLS transport, else None."""
    try:
        connection = transport.getHandle()
        version = connection.get_protocol_version_name()
        cipher = connection.get_cipher_name()
    except Exception:  # not TLS, or the handshake is not done
        return None
    if not cipher:
        return None
    return f"using {version} with cipher {cipher}"
