"""Mail address and domain name syntax (RFC 5321 §4.1.2, RFC 6531 for UTF-8 local parts).

Accounts and aliases are named by a dot-atom local part and a domain name.  Domains are kept in
their ASCII (A-label) form, lower-cased; local parts are lower-cased too, because users expect
``Alice@`` and ``alice@`` to be the same mailbox.
"""

from __future__ import annotations

import re

import idna

from mailbox_appliance.errors import InvalidAddress

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]"
# RFC 6531 §3.3: UTF-8 local parts extend atext with any non-ASCII character.
_LOCAL_RE = re.compile(rf"^(?:{_ATEXT}|[^\x00-\x7f])+(?:\.(?:{_ATEXT}|[^\x00-\x7f])+)*$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_domain(name: str) -> str:
    """The A-label, lower-case form of a domain name; InvalidAddress if it is not one."""
    if not isinstance(name, str) or not name:
        raise InvalidAddress("empty domain name")
    if name != name.strip() or name.endswith("."):
        raise InvalidAddress(f"invalid domain name {name!r}: no spaces or trailing dot")
    try:
        # IDNA2008 (RFC 5891) with UTS #46 mapping, not Python's IDNA2003 codec, which
        # turns straße.de into strasse.de: a different domain.
        ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except UnicodeError:  # idna.IDNAError is a UnicodeError
        raise InvalidAddress(f"invalid domain name {name!r}") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2:
        raise InvalidAddress(f"invalid domain name {name!r}: expected a name like example.org")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise InvalidAddress(f"invalid domain name {name!r}: bad label {label!r}")
    if labels[-1].isdigit():
        raise InvalidAddress(f"invalid domain name {name!r}: an address literal is not a domain")
    return ascii_name


def split_address(address: str) -> tuple[str, str]:
    """``(local_part, domain)`` of an address, normalized; InvalidAddress otherwise."""
    if not isinstance(address, str) or address.count("@") != 1:
        raise InvalidAddress(f"invalid address {address!r}: expected local-part@domain")
    local, domain = address.split("@")
    if not local or len(local.encode("utf-8")) > 64 or not _LOCAL_RE.match(local):
        raise InvalidAddress(f"invalid address {address!r}: bad local part")
    return local.lower(), normalize_domain(domain)


def normalize_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}"
