"""The MIME part tree the scanner builds (RFC 2045, RFC 2046 §5) and its stored form.

A ``Part`` covers ``[h, e)`` of the raw message: its header ``[h, b)`` (including the blank
line that ends it, when there is one) and its body ``[b, e)``.  A multipart has ``children``;
a message/rfc822 (or message/global) part has ``msg``, the embedded message, whose header
starts where the part's body does.  ``to_node`` gives the JSON form stored per message.
"""

from __future__ import annotations

from mailbox_appliance.mime.headers import PartInfo

LEAF = "leaf"
MULTIPART = "multipart"
MESSAGE = "message"


class Part:
    __slots__ = (
        "h",
        "b",
        "e",
        "lf_b",
        "lf_e",
        "info",
        "kind",
        "text",
        "truncated",
        "digest",
        "children",
        "msg",
        "depth",
        "in_multipart",
        "message_root",
        "blank",
    )

    def __init__(self, h: int, depth: int, *, in_multipart: bool, message_root: bool):
        self.h = h
        self.b = h
        self.e = h
        self.lf_b = 0
        self.lf_e = 0
        self.info: PartInfo | None = None
        self.kind = LEAF
        self.text = False  # text/* (or no Content-Type): BODYSTRUCTURE counts its lines
        self.truncated = False  # too deep or too many parts: reported as octet-stream
        self.digest = False  # multipart/digest: parts default to message/rfc822
        self.children: list[Part] = []
        self.msg: Part | None = None
        self.depth = depth
        self.in_multipart = in_multipart
        self.message_root = message_root
        self.blank = 0  # length of the blank line that ended the header (0, 1 or 2)

    @property
    def needs_lines(self) -> bool:
        return self.text or self.kind == MESSAGE

    @property
    def lines(self) -> int:
        return self.lf_e - self.lf_b

    def media_type(self) -> str:
        """The media type, lower-cased "type/subtype", as the structure's "t" records it."""
        if self.truncated:
            return "application/octet-stream"
        info = self.info
        if info is None or info.content_type is None:
            return "message/rfc822" if self.kind == MESSAGE else "text/plain"
        content_type = info.content_type.lower()
        return content_type if "/" in content_type else content_type + "/"

    def to_node(self) -> dict:
        node: dict = {"h": self.h, "b": self.b, "e": self.e, "t": self.media_type()}
        if self.kind == MULTIPART:
            node["sub"] = [child.to_node() for child in self.children]
        elif self.kind == MESSAGE and self.msg is not None:
            node["msg"] = self.msg.to_node()
        return node
