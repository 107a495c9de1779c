"""Starting a real store (schema migrated, threads running) inside a trial test."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from mailbox_appliance.store import Store
from mailbox_appliance.store.migrate import upgrade


@inlineCallbacks
def started_store(testcase, database_url: str, **kw):
    """A migrated, started Store on ``database_url``; stopped at cleanup."""
    upgrade(database_url)
    blob_dir = os.path.abspath(testcase.mktemp())
    store = Store(reactor, database_url, blob_dir, **kw)
    yield store.start()
    testcase.addCleanup(store.stop)
    return store
