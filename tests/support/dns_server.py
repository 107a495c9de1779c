"""An authoritative DNS server on loopback (UDP and TCP, one port) for MX and DNSBL tests.

Records are a plain table that tests change at runtime::

    {"example.net": {"MX": [(10, "mx1.example.net")]},
     "mx1.example.net": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
     "nullmx.test": {"MX": [(0, ".")]},          # RFC 7505 null MX
     "broken.test": "SERVFAIL"}                    # or "REFUSED", "NXDOMAIN", "TIMEOUT"

A name not in the table is NXDOMAIN, a name without the asked type is NODATA (NOERROR, no
answers); both carry the AA bit.  "TIMEOUT" never answers.  Names are case-insensitive.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.names import dns, server

#: Response codes a table entry (or ``fail_next``) can name; None means: never answer.
RCODES: dict[str, int | None] = {
    "NOERROR": dns.OK,
    "FORMERR": dns.EFORMAT,
    "SERVFAIL": dns.ESERVER,
    "NXDOMAIN": dns.ENAME,
    "NOTIMP": dns.ENOTIMP,
    "REFUSED": dns.EREFUSED,
    "TIMEOUT": None,
}

_CNAME_HOPS = 8


def _key(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.lower().rstrip(".")


def _check(rcode: str) -> None:
    if rcode not in RCODES:
        raise ValueError(f"unknown rcode {rcode!r}; one of {', '.join(RCODES)}")


def _domain(name: str) -> bytes:
    """A name for the wire; "." (or "") is the root, as in a null MX."""
    return name.rstrip(".").encode("ascii") if name not in ("", ".") else b""


def _record(rtype: str, value: Any, ttl: int) -> Any:
    if rtype == "A":
        return dns.Record_A(value, ttl=ttl)
    if rtype == "AAAA":
        return dns.Record_AAAA(value, ttl=ttl)
    if rtype == "MX":
        preference, exchange = value
        return dns.Record_MX(preference, _domain(exchange), ttl=ttl)
    if rtype == "TXT":
        text = value.encode() if isinstance(value, str) else value
        strings = [text[i : i + 255] for i in range(0, len(text), 255)] or [b""]
        return dns.Record_TXT(*strings, ttl=ttl)
    if rtype in ("CNAME", "PTR", "NS"):
        return getattr(dns, f"Record_{rtype}")(_domain(value), ttl=ttl)
    if rtype == "SRV":
        priority, weight, port, target = value
        return dns.Record_SRV(priority, weight, port, _domain(target), ttl=ttl)
    raise ValueError(f"LoopbackDNS cannot serve {rtype} records")


class _Factory(server.DNSServerFactory):
    """Answers from the ``LoopbackDNS`` table instead of a resolver chain.

    The stock ``handleQuery`` sets AA only when an answer is authoritative (so never on
    NXDOMAIN) and logs every SERVFAIL as an error, which trial counts as a failure.
    """

    def __init__(self, owner: LoopbackDNS):
        super().__init__()
        self.owner = owner
        self.lost: dict[Any, defer.Deferred[None]] = {}

    def connectionMade(self, protocol: Any) -> None:
        super().connectionMade(protocol)
        self.lost[protocol] = defer.Deferred()

    def connectionLost(self, protocol: Any) -> None:
        super().connectionLost(protocol)
        d = self.lost.pop(protocol, None)
        if d is not None:
            d.callback(None)

    def handleQuery(self, message: Any, protocol: Any, address: Any) -> defer.Deferred[None]:
        if not message.queries:
            self.sendReply(protocol, self._responseFromMessage(message, dns.EFORMAT), address)
            return defer.succeed(None)
        query = message.queries[0]
        rtype = dns.QUERY_TYPES.get(query.type) or dns.EXT_QUERIES.get(query.type, str(query.type))
        self.owner.queries.append((query.name.name.decode("ascii", "replace"), rtype))
        rcode, answers, additional = self.owner._answer(query.name.name, query.type)
        if rcode is None:
            return defer.succeed(None)
        response = self._responseFromMessage(message, rcode, answers=answers, additional=additional)
        response.auth = rcode in (dns.OK, dns.ENAME)
        self.sendReply(protocol, response, address)
        return defer.succeed(None)


class LoopbackDNS:
    """Serve ``records`` on 127.0.0.1, UDP and TCP on the same port."""

    def __init__(self, records: dict[str, Any] | None = None, reactor: Any = None, ttl: int = 0):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.ttl = ttl
        self.records: dict[str, Any] = {}
        for name, entry in (records or {}).items():
            self.records[_key(name)] = entry if isinstance(entry, str) else dict(entry)
        self.queries: list[tuple[str, str]] = []
        self._fail_next: dict[str, list[str]] = {}
        self._factory = _Factory(self)
        self._udp: Any = None
        self._tcp: Any = None

    def start(self) -> int:
        """Listen on a free port for both UDP and TCP; return it."""
        for _ in range(20):
            udp = self.reactor.listenUDP(
                0, dns.DNSDatagramProtocol(self._factory, reactor=self.reactor), "127.0.0.1"
            )
            port = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(port, self._factory, interface="127.0.0.1")
            except error.CannotListenError:
                udp.stopListening()
                continue
            self._udp, self._tcp = udp, tcp
            return port
        raise RuntimeError("LoopbackDNS: no port free for both UDP and TCP")

    @property
    def port(self) -> int:
        return self._udp.getHost().port

    @property
    def nameserver(self) -> str:
        """``127.0.0.1:PORT``, as a config entry names a resolver."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close open TCP connections."""
        waits = [
            defer.maybeDeferred(p.stopListening) for p in (self._udp, self._tcp) if p is not None
        ]
        self._udp = self._tcp = None
        waits.extend(self._factory.lost.values())
        for protocol in list(self._factory.lost):
            protocol.transport.abortConnection()
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def set(self, name: str, rtype: str, values: Any) -> None:
        """Replace the ``rtype`` records of ``name``; one value may be given bare."""
        if isinstance(values, (str, bytes, tuple)):
            values = [values]
        entry = self.records.get(_key(name))
        if not isinstance(entry, dict):
            entry = self.records[_key(name)] = {}
        entry[rtype.upper()] = list(values)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Forget ``name`` (NXDOMAIN from now on), or only its ``rtype`` records (NODATA)."""
        if rtype is None:
            self.records.pop(_key(name), None)
        elif isinstance(self.records.get(_key(name)), dict):
            self.records[_key(name)].pop(rtype.upper(), None)

    def fail(self, name: str, rcode: str = "SERVFAIL") -> None:
        """Answer every query for ``name`` with ``rcode`` (a key of ``RCODES``)."""
        _check(rcode)
        self.records[_key(name)] = rcode

    def fail_next(self, name: str, rcode: str = "SERVFAIL", times: int = 1) -> None:
        """Answer the next ``times`` queries for ``name`` with ``rcode``, then the table."""
        _check(rcode)
        self._fail_next.setdefault(_key(name), []).extend([rcode] * times)

    def _answer(self, qname: bytes, qtype: int) -> tuple[int | None, list, list]:
        """(rcode or None for no reply, answers, additional) for one question."""
        owner = qname
        answers: list[dns.RRHeader] = []
        for _ in range(_CNAME_HOPS):
            key = _key(owner)
            pending = self._fail_next.get(key)
            if pending:
                return RCODES[pending.pop(0)], answers, []
            entry = self.records.get(key)
            if entry is None:
                return dns.ENAME, answers, []
            if isinstance(entry, str):
                return RCODES[entry], answers, []
            wanted = [t for t in entry if qtype == dns.ALL_RECORDS or dns.REV_TYPES.get(t) == qtype]
            if not wanted and "CNAME" in entry and qtype != dns.CNAME:
                target = entry["CNAME"][0]
                answers.append(self._rr(owner, "CNAME", target))
                owner = _domain(target)
                continue
            for rtype in wanted:
                answers.extend(self._rr(owner, rtype, v) for v in entry[rtype])
            return dns.OK, answers, self._additional(answers)
        return dns.ESERVER, [], []

    def _rr(self, owner: bytes, rtype: str, value: Any) -> dns.RRHeader:
        return dns.RRHeader(
            owner,
            dns.REV_TYPES[rtype],
            dns.IN,
            self.ttl,
            _record(rtype, value, self.ttl),
            auth=True,
        )

    def _additional(self, answers: list[dns.RRHeader]) -> list[dns.RRHeader]:
        """Addresses of MX exchanges held in the table, as a real server adds them."""
        extra = []
        for rr in answers:
            if rr.type != dns.MX or not rr.payload.name.name:
                continue
            entry = self.records.get(_key(rr.payload.name.name))
            if isinstance(entry, dict):
                for rtype in ("A", "AAAA"):
                    extra.extend(
                        self._rr(rr.payload.name.name, rtype, v) for v in entry.get(rtype, ())
                    )
        return extra
