"""The site the ``http`` and ``https`` services serve: the file-transfer station.

``/``: the upload page (web/page.py).  ``/files/``: tus 1.0.0 uploads (web/tus.py) over the
store's uploads; a finished upload's URL downloads it with ranges (web/download.py).
``/api/``: the JSON API of the page and of scripts (web/api.py, with the cookie sessions of
web/session.py).  ``/s/``: anonymous share links (web/share.py).  Both services share one
authenticator, so a verified password is not checked again, and a session stays open, when a
client switches between them.
"""

from __future__ import annotations

from twisted.web import server

from mailbox_appliance.web import download
from mailbox_appliance.web.api import ApiResource
from mailbox_appliance.web.auth import HTTPAuthenticator
from mailbox_appliance.web.page import page_resource
from mailbox_appliance.web.request import upload_site
from mailbox_appliance.web.share import ShareResource
from mailbox_appliance.web.tus import TusResource


def _send(request, size: int, sha256: str, read, name: str | None) -> None:
    download.send(request, download.Content(size, sha256, name, read))


def station_site(appliance) -> server.Site:
    authenticate = appliance.http_authenticator
    if authenticate is None:
        authenticate = appliance.http_authenticator = HTTPAuthenticator(
            appliance.reactor,
            appliance.portal,
            appliance.login_throttle,
            public_url=appliance.config.transfer.public_url,
        )
    files = TusResource(
        appliance.store.uploads,
        authenticate,
        appliance.config.transfer.max_file_size,
        appliance.reactor,
        stream=_send,
    )
    root = page_resource(appliance)
    root.putChild(b"files", files)
    root.putChild(b"api", ApiResource(appliance, authenticate))
    root.putChild(b"s", ShareResource(appliance))
    return upload_site(root)
