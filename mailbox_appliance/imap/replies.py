"""The tagged answers a command handler can end with, other than OK."""

from __future__ import annotations


class IMAPError(Exception):
    """End the command with ``NO`` (it failed) or ``BAD`` (it was wrong), RFC 3501 §7.1.

    ``code`` is a response code without brackets (RFC 5530: ``NONEXISTENT``, ``TRYCREATE``...).
    """

    def __init__(self, status: str, text: str, code: str | None = None):
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code
