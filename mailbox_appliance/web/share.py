"""Anonymous share links: ``/s/<token>`` (a small download page) and ``/s/<token>/download``.

Whoever holds the token may download, with the link's password when it has one (sent as
``?password=`` or by the page's form, a POST).  Each GET or POST that starts a download counts
once against ``max_downloads`` (one conditional UPDATE in the store, so parallel downloads
cannot overshoot); HEAD counts nothing.  A resumed download is a new GET and counts again:
otherwise ranged requests would be downloads nobody counts.

Answers: expired or used up → 410 (the link existed: say why it stopped working); revoked or
unknown → 404 (the same page, so a guess learns nothing); a wrong password → 403, counted by
the login throttle per client IP and per link.  Every page is escaped HTML under a CSP that
allows no script, and ``Referrer-Policy: no-referrer`` keeps the token out of other sites' logs.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mailbox_appliance.web import download
from mailbox_appliance.web.api import TOKEN, blob_content, share_state

log = Logger()

_CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.3em;word-break:break-all}.meta{color:#555}"
    "a.button,button{display:inline-block;padding:.6em 1.2em;background:#2563eb;color:#fff;"
    "border:0;border-radius:.3em;text-decoration:none;font-size:1em}"
    "input{padding:.5em;font-size:1em}.error{color:#b91c1c}"
)
_GONE = {
    "expired": "This link has expired.",
    "used up": "This link was used as many times as it allows.",
}


class ShareResource(Resource):
    """``/s/``: anonymous downloads through share links (see the module docstring)."""

    isLeaf = True

    def __init__(self, appliance: Any):
        super().__init__()
        self.store = appliance.store
        self.passwords = appliance.passwords
        self.throttle = appliance.login_throttle
        self.clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)

    def render(self, request: IRequest) -> int:
        Deferred.fromCoroutine(self._respond(request))
        return NOT_DONE_YET

    async def _respond(self, request: IRequest) -> None:
        try:
            await self._dispatch(request)
        except Exception:
            log.failure("share {method!r} {uri!r}", method=request.method, uri=request.uri)
            if not request.startedWriting:
                self._page(request, 500, "Something went wrong", "<p>Please try again later.</p>")

    async def _dispatch(self, request: IRequest) -> None:
        path = [p.decode("latin-1") for p in request.postpath or []]
        while path and path[-1] == "":
            path.pop()
        if len(path) not in (1, 2) or not TOKEN.match(path[0]):
            return self._missing(request)
        if len(path) == 2 and path[1] != "download":
            return self._missing(request)
        allowed = (b"GET", b"HEAD") if len(path) == 1 else (b"GET", b"HEAD", b"POST")
        if request.method not in allowed:
            request.setHeader(b"Allow", b", ".join(allowed))
            return self._page(request, 405, "Not allowed", "<p>Use the link as it is.</p>")
        token = path[0]
        share = await self.store.share(token)
        state = share_state(share, self.clock())
        if state == "revoked":
            return self._missing(request)
        if state != "active":
            return self._page(request, 410, "Link no longer available", f"<p>{_GONE[state]}</p>")
        assert share is not None
        if len(path) == 1:
            return self._landing(request, share)
        await self._download(request, share)

    # -- pages ---------------------------------------------------------------------------

    def _missing(self, request: IRequest) -> None:
        self._page(
            request, 404, "No such link", "<p>This link does not exist or was withdrawn.</p>"
        )

    def _landing(self, request: IRequest, share: dict[str, Any], error: str = "") -> None:
        """The page a recipient opens: what the file is, until when, and the way to get it."""
        action = html.escape(
            f"/{'/'.join(p.decode() for p in request.prepath)}/{share['token']}/download",
            quote=True,
        )
        expires = share["expires"].astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        meta = f"{_size(share['size'])} · available until {html.escape(expires)}"
        limit = share["max_downloads"]
        if limit is not None:
            left = limit - share["downloads"]
            meta += f" · {left} download{'s' if left != 1 else ''} left"
        body = f'<p class="meta">{meta}</p>'
        if error:
            body += f'<p class="error">{html.escape(error)}</p>'
        if share["password_hash"] is not None:
            body += (
                f'<form method="post" action="{action}">'
                '<p><label>Password <input type="password" name="password" required '
                'autocomplete="off" autofocus></label></p>'
                '<p><button type="submit">Download</button></p></form>'
            )
        else:
            body += f'<p><a class="button" href="{action}" download>Download</a></p>'
        self._page(request, 403 if error else 200, share["name"], body)

    def _page(self, request: IRequest, code: int, title: str, body: str) -> None:
        """A small HTML page; ``body`` is already escaped, ``title`` is escaped here."""
        if getattr(request, "_disconnected", False) or request.finished:
            return
        text = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<meta name="robots" content="noindex">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
        ).encode()
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(text))
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy", _CSP)
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"X-Frame-Options", b"DENY")
        if request.method != b"HEAD":
            request.write(text)
        request.finish()

    # -- the download --------------------------------------------------------------------

    async def _download(self, request: IRequest, share: dict[str, Any]) -> None:
        token = share["token"]
        if share["password_hash"] is not None and not await self._password_ok(request, share):
            return
        if request.method != b"HEAD" and not await self.store.count_download(token):
            # Revoked, expired or used up since it was read (a parallel download took the last).
            state = share_state(await self.store.share(token), self.clock())
            if state == "revoked":
                return self._missing(request)
            reason = _GONE.get(state, _GONE["used up"])
            return self._page(request, 410, "Link no longer available", f"<p>{reason}</p>")
        content = await blob_content(
            self.store, request, share["blob_sha256"], share["size"], share["name"]
        )
        if content is not None:
            request.setHeader(b"Referrer-Policy", b"no-referrer")
            download.send(request, content)

    async def _password_ok(self, request: IRequest, share: dict[str, Any]) -> bool:
        """Check the link's password; answer 403 (or 429 when throttled) if it is not right."""
        given = (request.args or {}).get(b"password", [b""])[0].decode("utf-8", "replace")
        if not given:
            self._landing(request, share, "This link needs its password.")
            return False
        ip = getattr(request.getClientAddress(), "host", "") or ""
        key = f"share:{share['token']}"
        wait = self.throttle.locked(ip, key)
        if wait > 0:
            request.setHeader(b"Retry-After", b"%d" % max(1, int(wait)))
            self._page(
                request, 429, "Too many attempts", "<p>Too many wrong passwords; try later.</p>"
            )
            return False
        ok, _ = await self.passwords.verify(share["password_hash"], given)
        if not ok:
            await self.throttle.hold(self.throttle.failed(ip, key))
            self._landing(request, share, "Wrong password.")
            return False
        self.throttle.succeeded(ip, key)
        return True


def _size(size: int) -> str:
    """A human size (binary units) with the exact byte count."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            shown = f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
            break
        value /= 1024
    return shown if size < 1024 else f"{shown} ({size:,} bytes)"
