"""DNS for outbound mail through ``twisted.names`` (never a blocking resolver call).

RFC 5321 §5.1: the MX records of the destination domain, lowest preference first and in
random order among equals; with no MX record the domain itself is the one host (the implicit
MX).  RFC 7505: a single MX of "." (a null MX) says the domain takes no mail, so the message is
bounced at once.  A domain that does not exist is bounced; any other DNS trouble (SERVFAIL, a
timeout) is temporary and the message waits for the next attempt.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Sequence

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from mailbox_appliance.routing import Hop, RoutingError

#: Positive answers are kept for their TTL, at most this long (seconds), and at most this many.
MAX_TTL = 3600
CACHE_ENTRIES = 10000
#: Names may be CNAMEs; twisted.names follows them within the answer section.
_ADDRESS_TYPES = ((dns.A, "A"), (dns.AAAA, "AAAA"))


class Resolver:
    def __init__(
        self,
        reactor,
        nameservers: Sequence[tuple[str, int]] = (),
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ):
        self._reactor = reactor
        self._nameservers = list(nameservers)
        # Retries at 1/3 and 2/3 of the budget, then give up: the queue retries later anyway.
        self._timeouts = (timeout / 3, timeout / 3, timeout / 3)
        self._client: client.Resolver | None = None
        self._cache: dict[tuple[int, str], tuple[float, list]] = {}
        self._random = rng or random.Random()

    @property
    def _resolver(self) -> client.Resolver:
        """Made at first use: with the system's resolv.conf it starts a re-read timer."""
        if self._client is None:
            if self._nameservers:
                self._client = client.Resolver(
                    servers=self._nameservers, reactor=self._reactor, timeout=self._timeouts
                )
            else:
                self._client = client.Resolver(
                    resolv="/etc/resolv.conf", reactor=self._reactor, timeout=self._timeouts
                )
        return self._client

    def close(self) -> None:
        """Stop re-reading /etc/resolv.conf (twisted.names checks it every minute)."""
        call = getattr(self._client, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()

    async def mail_hosts(self, domain: str) -> list[str]:
        """The hosts that take mail for ``domain``, in the order to try them."""
        try:
            answers = await self._lookup(dns.MX, domain)
        except error.DNSNameError:
            raise RoutingError("5.1.2", f"the domain {domain} does not exist") from None
        except Exception as e:
            raise _temporary(domain, "MX", e) from None
        records = [(r.payload.preference, str(r.payload.name)) for r in answers if r.type == dns.MX]
        if not records:
            return [domain]  # RFC 5321 §5.1: the implicit MX
        if any(name in ("", ".") for _, name in records):
            # RFC 7505 §3: a null MX (preference 0, "."): the domain accepts no mail.
            raise RoutingError("5.1.10", f"the domain {domain} accepts no mail (null MX)")
        self._random.shuffle(records)
        records.sort(key=lambda record: record[0])
        return [name.rstrip(".") for _, name in records]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``; [] when it has none or does not exist."""
        if _is_ip(host):
            return [host]
        lookups = [self._addresses(host, rtype, name) for rtype, name in _ADDRESS_TYPES]
        try:
            found = await gatherResults(lookups, consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()
        return [address for addresses in found for address in addresses]

    def _addresses(self, host: str, rtype: int, name: str):
        def _found(answers) -> list[str]:
            return [_text(r.payload) for r in answers if r.type == rtype]

        def _failed(failure: Failure):
            if failure.check(error.DNSNameError):
                return []
            raise _temporary(host, name, failure.value)

        return self._lookup(rtype, host).addCallbacks(_found, _failed)

    def _lookup(self, rtype: int, name: str) -> Deferred:
        """The answer records for ``name``, from the cache while their TTL lasts.

        Every message to a domain asks again (the routing policy may choose anew), so without
        a cache a busy queue would ask the resolver for the same MX many times a second.
        """
        key = (rtype, name.lower())
        now = self._reactor.seconds()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return succeed(hit[1])
        method = {
            dns.MX: self._resolver.lookupMailExchange,
            dns.A: self._resolver.lookupAddress,
            dns.AAAA: self._resolver.lookupIPV6Address,
        }[rtype]

        def _store(result):
            answers = result[0]
            ttl = min((r.ttl for r in answers), default=0)
            if ttl > 0:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (now + min(ttl, MAX_TTL), answers)
            return answers

        return method(name).addCallback(_store)

    async def lookup_a(self, name: str) -> list[str]:
        """The A records of ``name`` (DNSBL queries); [] when it does not exist."""
        return await self._addresses(name, dns.A, "A")

    async def next_hops(self, domain: str, port: int) -> list[Hop]:
        """Every address of every mail host of ``domain``, in the order to try them."""
        hosts = await self.mail_hosts(domain)
        hops: list[Hop] = []
        trouble: RoutingError | None = None
        for host in hosts:
            try:
                hops += [Hop(host, address, port) for address in await self.addresses(host)]
            except RoutingError as e:  # one MX host's trouble: the others may do
                trouble = e
        if not hops:
            if trouble is not None:
                raise trouble
            # RFC 5321 §5.1: no host with an address means the mail cannot be delivered.
            raise RoutingError("5.1.2", f"no mail server of {domain} has an address")
        return hops

    async def relay_hops(self, host: str, port: int) -> list[Hop]:
        addresses = await self.addresses(host)
        if not addresses:
            raise RoutingError("4.4.3", f"the relay {host} has no address")
        return [Hop(host, address, port) for address in addresses]


def _text(record) -> str:
    if isinstance(record, dns.Record_A):
        return record.dottedQuad()
    return socket.inet_ntop(socket.AF_INET6, record.address)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _temporary(name: str, rtype: str, e: BaseException) -> RoutingError:
    why = type(e).__name__ if isinstance(e, error.DomainError | error.TimeoutError) else str(e)
    return RoutingError("4.4.3", f"DNS {rtype} lookup of {name} failed: {why or type(e).__name__}")
