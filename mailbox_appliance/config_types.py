"""Value types of the configuration that sections in other modules share."""

from __future__ import annotations

import re


class Size(int):
    """A byte count; YAML may give an integer or a string such as ``"64 MiB"``."""


def human_size(size: int) -> str:
    """``1.5 GiB``: a byte count for people (the CLI, download links in mail)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Parse ``1048576``, ``"64 MiB"``, ``"2GB"`` into bytes; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size (bytes, or a string like '64 MiB')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size of zero or more bytes")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError("expected a size (bytes, or a string like '64 MiB')")
