"""The site the ``http`` and ``https`` services serve: the file-transfer station.

``/files/``: tus 1.0.0 uploads (web/tus.py) over the store's uploads; a finished upload's URL
downloads it with ranges (web/download.py).  Both services share one authenticator, so a
verified password is not checked again when a client switches between them.
"""

from __future__ import annotations

from twisted.web import resource, server

from mailbox_appliance.web import download
from mailbox_appliance.web.auth import HTTPAuthenticator
from mailbox_appliance.web.request import upload_site
from mailbox_appliance.web.tus import TusResource


def _send(request, size: int, sha256: str, read, name: str | None) -> None:
    download.send(request, download.Content(size, sha256, name, read))


def station_site(appliance) -> server.Site:
    authenticate = appliance.http_authenticator
    if authenticate is None:
        authenticate = appliance.http_authenticator = HTTPAuthenticator(
            appliance.reactor, appliance.portal, appliance.login_throttle
        )
    files = TusResource(
        appliance.store.uploads,
        authenticate,
        appliance.config.transfer.max_file_size,
        appliance.reactor,
        stream=_send,
    )
    root = resource.Resource()
    root.putChild(b"files", files)
    return upload_site(root)
