"""Socket settings every protocol server shares."""

from __future__ import annotations


def no_delay(transport) -> None:
    """Turn Nagle's algorithm off: a reply must not wait for the ACK of the one before it.

    Replies go out in small writes (SMTP pipelining: MAIL's, then RCPT's and DATA's; IMAP:
    untagged data, then the tagged result); under Nagle the second waits for the client's
    delayed ACK, up to 40 ms on Linux, each time.
    """
    while transport is not None:
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:  # not a TCP socket (a UNIX socket endpoint, say)
                pass
            return
        transport = getattr(transport, "transport", None)
