"""Where users reach the file-transfer station: the base of share links and download links.

``transfer.public_url`` when set; else https on the configured hostname, with the port of the
first ``https`` listener (left out when it is 443).  Used by the CLI (``files share``) and by
submission, which puts download links into mail (smtp/detach.py).
"""

from __future__ import annotations

from mailbox_appliance.config import Config

#: Endpoint types whose first positional argument (or ``port=``) is a TCP port.
_PORTED = frozenset({"tcp", "tcp6", "ssl", "le", "lets"})


class StationURLError(ValueError):
    """The station's address cannot be told from the config; the message says what to set."""


def _split_endpoint(description: str) -> list[str]:
    """Twisted's endpoint string fields: colons separate, a backslash escapes."""
    fields, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def endpoint_port(description: str) -> int | None:
    """The TCP port a server endpoint string listens on; None when it does not say (e.g.
    ``systemd:`` sockets, whose port only the service manager knows)."""
    kind, *rest = _split_endpoint(description)
    if kind.lower() not in _PORTED:
        return None
    positional = [f for f in rest if "=" not in f]
    named = dict(f.split("=", 1) for f in rest if "=" in f)
    port = named.get("port", positional[0] if positional else None)
    return int(port) if port is not None and port.isdigit() else None


def public_url(config: Config) -> str:
    """Where users reach the station, without a trailing slash (``transfer.public_url``; when
    null, https on the hostname with the first https listener's port unless it is 443)."""
    if config.transfer.public_url:
        return config.transfer.public_url.rstrip("/")
    base = f"https://{config.hostname}"
    listeners = config.listen.get("https", ())
    if not listeners:
        return base
    port = endpoint_port(listeners[0])
    if port is None:
        raise StationURLError(
            f"cannot tell the https port from listen.https[0] ({listeners[0]}):"
            " set transfer.public_url"
        )
    return base if port == 443 else f"{base}:{port}"
