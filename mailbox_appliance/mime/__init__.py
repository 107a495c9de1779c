"""MIME structure of stored messages, for IMAP FETCH and SEARCH (RFC 3501, RFC 2045/2046).

Each message is scanned once, at delivery, by streaming its raw bytes through
``MimeScanner``; the resulting structure is stored (a JSON column) and FETCH BODYSTRUCTURE,
BODY and ENVELOPE are answered from it, BODY[section] from byte ranges of the blob file.

The structure::

    {
      "v": 1,
      "envelope": ENVELOPE list (RFC 3501 §7.4.2), without the "ENVELOPE " label,
      "body": BODY (non-extensible form),
      "bodystructure": BODYSTRUCTURE (extensible form),
      "sent": "YYYY-MM-DD" from the Date field, or None (RFC 3501 §6.4.4 SENT*),
      "hdr": the top-level header block, at most 64 KiB of it,
      "part": Node,
    }
    Node = {"h": header start, "b": body start, "e": body end (exclusive),
            "t": "type/subtype" lower-cased,
            "sub": [Node, ...],   # multipart/* only
            "msg": Node}          # message/rfc822 and message/global only: the embedded
                                  # message, whose "h" is this part's "b"

Strings that stand for raw bytes (the rendered answers, "hdr") are latin-1 ``str``:
``.encode("latin-1")`` gives the exact bytes to send.  Offsets are into the raw message.
"""

from mailbox_appliance.mime.scanner import MimeScanner, scan
from mailbox_appliance.mime.search import header_values, text_chunks
from mailbox_appliance.mime.sections import filter_header_fields, locate

__all__ = [
    "MimeScanner",
    "filter_header_fields",
    "header_values",
    "locate",
    "scan",
    "text_chunks",
]
