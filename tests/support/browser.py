"""Headless Chromium for end-to-end tests of the station's page.

Debian's ``chromium`` driven by Playwright for Python (``pip install playwright``; never
``playwright install``: we use the system browser).  Playwright's sync API must stay on the
thread that started it, and the appliance under test runs on the trial reactor, so every
browser call runs on one dedicated thread (`BrowserThread`) and comes back as a Deferred.  A
test that needs something from the reactor while on that thread uses
``blockingCallFromThread``.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

#: The browser binary (Debian's package); MAILBOX_APPLIANCE_TEST_CHROMIUM overrides it.
CHROMIUM = os.environ.get("MAILBOX_APPLIANCE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


class BrowserThread:
    """One thread that runs the calls given to `call`, in order, each answered by a
    Deferred fired on the reactor."""

    def __init__(self, reactor: Any):
        self.reactor = reactor
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="browser", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        d: Deferred = Deferred()
        self._jobs.put((fn, args, kwargs, d))
        return d

    def stop(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, kwargs, d = job
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                self.reactor.callFromThread(d.errback, Failure())
            else:
                self.reactor.callFromThread(d.callback, result)


class Browser:
    """A launched Chromium with one context (cookies, localStorage) and one page.

    ``page`` and ``context`` are Playwright sync objects: use them only inside functions
    passed to `run`.  ``errors`` lists the page's script errors and CSP refusals.
    """

    def __init__(self, thread: BrowserThread):
        self.thread = thread
        self.playwright: Any = None
        self.browser: Any = None
        self.context: Any = None
        self.page: Any = None
        #: Uncaught script errors and CSP refusals seen so far (read on the reactor thread).
        self.errors: list[str] = []

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run ``fn(page, *args, **kwargs)`` on the browser thread."""
        return self.thread.call(lambda: fn(self.page, *args, **kwargs))

    def _launch(self, timeout_ms: int) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        self.context = self.browser.new_context(accept_downloads=True)
        self.context.set_default_timeout(timeout_ms)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        """Script errors and Content-Security-Policy refusals (a 401 the page expects is
        logged by Chromium as "Failed to load resource" and is not one)."""
        text = message.text
        if message.type == "error" and not text.startswith("Failed to load resource"):
            self.errors.append(text)
        elif "Content Security Policy" in text:
            self.errors.append(text)

    def _close(self) -> None:
        for close in (
            lambda: self.context.close(),
            lambda: self.browser.close(),
            lambda: self.playwright.stop(),
        ):
            try:
                close()
            except Exception:
                pass  # tearing down after a failure: the first error is the one to see

    @inlineCallbacks
    def close(self):
        try:
            yield self.thread.call(self._close)
        finally:
            self.thread.stop()


@inlineCallbacks
def started_browser(testcase, reactor: Any, timeout_ms: int = 30_000):
    """A launched headless Chromium, closed at cleanup; SkipTest when there is none."""
    reason = unavailable()
    if reason is not None:
        raise SkipTest(reason)
    browser = Browser(BrowserThread(reactor))
    try:
        yield browser.thread.call(browser._launch, timeout_ms)
    except BaseException:
        yield browser.close()
        raise
    testcase.addCleanup(browser.close)
    return browser
