"""Somewhere for outbound mail to go in tests: a loopback SMTP sink as the MX of the test
domains (on 127.0.0.2), a loopback DNS server naming it, and the config that points the
appliance's queue runner at both."""

from __future__ import annotations

from tests.support.dns_server import LoopbackDNS
from tests.support.sink import Sink, SinkBehaviour

#: The interface the sink listens on: every test domain's MX host resolves to it.
MX_ADDRESS = "127.0.0.2"

RECORDS = {
    "remote.test": {"MX": [(10, "mx.remote.test")]},
    "mx.remote.test": {"A": [MX_ADDRESS]},
    "other.test": {"MX": [(10, "mx.remote.test")]},
    "world.test": {"MX": [(10, "mx.remote.test")]},
    "nullmx.test": {"MX": [(0, ".")]},
    "broken.test": "SERVFAIL",
    # The preferred MX has no server listening: the next one must get the mail.
    "twomx.test": {"MX": [(10, "dead.twomx.test"), (20, "mx.remote.test")]},
    "dead.twomx.test": {"A": ["127.0.0.3"]},
    # No MX record: the domain's own address is the mail host (RFC 5321 §5.1).
    "implicit.test": {"A": [MX_ADDRESS]},
}


def sink_and_dns(testcase, behaviour: SinkBehaviour | None = None) -> tuple[Sink, LoopbackDNS]:
    """A started sink and DNS server, stopped at the test's cleanup."""
    sink = Sink(behaviour)
    sink.start(MX_ADDRESS)
    testcase.addCleanup(sink.stop)
    dns = LoopbackDNS(dict(RECORDS))
    dns.start()
    testcase.addCleanup(dns.stop)
    return sink, dns


def outbound_config(sink: Sink, dns: LoopbackDNS, **delivery) -> dict:
    """Config sections that send outbound mail to ``sink`` by MX lookup through ``dns``,
    at once (``hold`` off), looking at the queue often; ``delivery`` adds or overrides keys."""
    return {
        "delivery": {
            "hold": False,
            "port": sink.port,
            "poll_interval": 0.2,
            "reuse_time": 0.5,
            **delivery,
        },
        "dns": {"nameservers": [dns.nameserver]},
    }
