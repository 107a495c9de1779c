"""The station's page at ``/``: one HTML file, its stylesheet and scripts (web/static/).

Plain files, no build step.  They are read once when the site is built, so each is served
from memory with a strong ETag (its SHA-256) and the right Content-Type.  ``index.html``
names the other files through ``{{static:PATH}}`` placeholders, which become
``/static/PATH?v=<hash>``: a versioned URL is cached for a year (``immutable``), while the page
itself and any unversioned URL are revalidated on each use (``no-cache``), so a new release is
picked up on the next load and never mixes old and new files.

Every answer carries ``Content-Security-Policy: default-src 'self'`` (plus the directives that
``default-src`` does not cover): the page has no inline script or style and loads nothing from
elsewhere, so an injected ``<script>`` cannot run.

``page_resource(appliance)`` is meant to be the site's root: it answers ``/`` and
``/static/...``, and the site puts ``files`` and ``api`` next to them with ``putChild``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from twisted.web import resource
from twisted.web.server import Request

#: Where the page's files are (shipped as package data).
STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"

CSP = (
    b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    b"object-src 'none'"
)
LONG_CACHE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/vnd.microsoft.icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
    ".md": b"text/markdown; charset=utf-8",
    ".map": b"application/json",
}

_PLACEHOLDER = re.compile(r"\{\{static:([A-Za-z0-9_./-]+)\}\}")


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, Content-Type, and version (a prefix of its SHA-256)."""

    body: bytes
    content_type: bytes
    sha256: str

    @property
    def version(self) -> str:
        return self.sha256[:16]

    @property
    def etag(self) -> bytes:
        return b'"' + self.sha256.encode() + b'"'


def asset(body: bytes, name: str) -> Asset:
    content_type = CONTENT_TYPES.get(Path(name).suffix.lower(), b"application/octet-stream")
    return Asset(body, content_type, hashlib.sha256(body).hexdigest())


def load_assets(directory: Path = STATIC_DIR) -> tuple[Asset, dict[str, Asset]]:
    """The page (placeholders filled in) and the other files by path under ``directory``."""
    files = {
        path.relative_to(directory).as_posix(): asset(path.read_bytes(), path.name)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".py"
    }
    index = files.pop(INDEX)

    def versioned(match: re.Match) -> str:
        name = match.group(1)
        if name not in files:
            raise ValueError(f"{INDEX} names {name}, which is not in {directory}")
        return f"/static/{name}?v={files[name].version}"

    html = _PLACEHOLDER.sub(versioned, index.body.decode("utf-8"))
    return asset(html.encode("utf-8"), INDEX), files


def _common_headers(request: Request) -> None:
    request.setHeader(b"Content-Security-Policy", CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"X-Frame-Options", b"DENY")


def _not_modified(request: Request, item: Asset) -> bool:
    """RFC 9110 §13.1.2 If-None-Match (weak comparison; "*" matches)."""
    header = request.getHeader(b"if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix(b"W/") for t in header.split(b",")]
    return b"*" in tags or item.etag in tags


def serve(request: Request, item: Asset, cache_control: bytes) -> bytes:
    """Answer a GET or HEAD with ``item`` (twisted.web drops the body of a HEAD)."""
    _common_headers(request)
    request.setHeader(b"Cache-Control", cache_control)
    request.setHeader(b"ETag", item.etag)
    if _not_modified(request, item):
        request.setResponseCode(304)
        return b""
    request.setHeader(b"Content-Type", item.content_type)
    request.setHeader(b"Content-Length", b"%d" % len(item.body))
    return item.body


class _NotFound(resource.Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        _common_headers(request)
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"not found\n"


class StaticResource(resource.Resource):
    """``/static/<path>``: the page's files from memory; no directory listings."""

    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, files: dict[str, Asset]):
        super().__init__()
        self.files = files

    def render_GET(self, request: Request) -> bytes:
        name = b"/".join(request.postpath or []).decode("utf-8", "replace")
        item = self.files.get(name)
        if item is None:
            return _NotFound().render(request)
        wanted = (request.args or {}).get(b"v", [b""])[0].decode("ascii", "replace")
        return serve(request, item, LONG_CACHE if wanted == item.version else REVALIDATE)


class PageResource(resource.Resource):
    """The site root: ``/`` is the page, ``/static/`` its files; other children are added
    with ``putChild`` (``files``, ``api``)."""

    allowedMethods = (b"GET", b"HEAD")

    def __init__(self, index: Asset, files: dict[str, Asset]):
        super().__init__()
        self.index = index
        self.putChild(b"static", StaticResource(files))

    def getChild(self, path: bytes, request: Request) -> resource.Resource:
        if path == b"":
            return self  # "/" (and "/" mounted below another root)
        return _NotFound()

    def render_GET(self, request: Request) -> bytes:
        return serve(request, self.index, REVALIDATE)


def page_resource(appliance=None) -> PageResource:
    """The page and its files, read from disk now (a missing file fails the start)."""
    index, files = load_assets()
    return PageResource(index, files)
