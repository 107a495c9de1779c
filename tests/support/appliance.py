"""The real Appliance in the test process, listening on loopback port 0, with accounts."""

from __future__ import annotations

import ssl

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from mailbox_appliance.datadir import initialise
from mailbox_appliance.service import Appliance
from tests.support.config import make_config

LOOPBACK_ANY = "tcp:0:interface=127.0.0.1"
PASSWORD = "correct horse battery staple"


@inlineCallbacks
def started_appliance(
    testcase, services=("smtp", "submission", "submissions"), listen=None, **overrides
):
    """A started Appliance serving ``services`` on loopback port 0 (or exactly ``listen``,
    a mapping of service to endpoint strings); stopped at cleanup."""
    if listen is None:
        listen = {service: [LOOPBACK_ANY] for service in services}
    config = make_config(testcase.mktemp(), listen=listen, **overrides)
    initialise(config)
    appliance = Appliance(config, reactor)
    yield appliance.start()
    testcase.addCleanup(appliance.stop)
    return appliance


@inlineCallbacks
def add_account(appliance, address: str, password: str = PASSWORD, quota: int | None = None):
    """Create the account (and its domain, if new); returns the account id."""
    domain = address.rsplit("@", 1)[1]
    if not (yield appliance.store.is_local_domain(domain)):
        yield appliance.store.add_domain(domain)
    password_hash = yield appliance.passwords.hash(password)
    account_id = yield appliance.store.add_account(
        address, password_hash, quota if quota is not None else appliance.config.quota.default
    )
    return account_id


def port_of(appliance, service: str) -> int:
    return appliance.address_of(service).port


def insecure_tls() -> ssl.SSLContext:
    """A client context that accepts the appliance's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
