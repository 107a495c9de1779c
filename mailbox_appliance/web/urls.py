"""The address a client reached the station at, for links in answers."""

import re

from twisted.web.iweb import IRequest

#: A Host header worth echoing: a name or an IPv4 address, or an IPv6 literal; with a port.
_HOST = re.compile(rb"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def host_url(request: IRequest) -> str:
    """scheme://host[:port] as the client addressed us (a Host that is not one is ignored)."""
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").strip()
    if not host or not _HOST.match(host):
        address = request.getHost()
        host = b"%s:%d" % (getattr(address, "host", "localhost").encode(), address.port)
    return f"{scheme}://{host.decode('ascii')}"
