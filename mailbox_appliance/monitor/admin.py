"""The admin listener (loopback only): ``GET /health`` says whether the store answers.

It is what load balancers and the pairing witness will poll; later issues add metrics and the
admin API under the same site.
"""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.web import resource, server

log = Logger()


class Health(resource.Resource):
    isLeaf = True

    def __init__(self, appliance):
        super().__init__()
        self.appliance = appliance

    def render_GET(self, request):
        self._answer(request)
        return server.NOT_DONE_YET

    @inlineCallbacks
    def _answer(self, request):
        store = self.appliance.store
        body = {"status": "ok", "hostname": self.appliance.config.hostname}
        try:
            body.update((yield store.health()))
        except Exception as e:
            log.failure("health check: the store did not answer")
            body = {"status": "failing", "reason": f"store: {e.__class__.__name__}"}
            request.setResponseCode(503)
        if request._disconnected:
            return
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(body).encode() + b"\n")
        request.finish()


def admin_site(appliance) -> server.Site:
    root = resource.Resource()
    root.putChild(b"health", Health(appliance))
    site = server.Site(root)
    site.displayTracebacks = False
    return site
