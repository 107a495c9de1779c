"""The Appliance: store first, listeners last; ordered, asynchronous start and stop.

Twisted's ``MultiService`` ignores its children's Deferreds and only logs a failed ``listen()``,
so the appliance sequences its parts itself: ``start()`` fires once every listener is bound, or
fails with a :class:`StartupError` that names the listener that could not be bound.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailbox_appliance.auth import Passwords, make_portal
from mailbox_appliance.config import IMPLICIT_TLS, SERVICES, Config
from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.smtp.detach import Detacher
from mailbox_appliance.smtp.runner import build_queue_runner
from mailbox_appliance.smtp.srs import SRS, load_secret
from mailbox_appliance.station_url import StationURLError, public_url
from mailbox_appliance.store import Store
from mailbox_appliance.throttle import LoginThrottle, ThrottleSettings
from mailbox_appliance.tls import server_context_factory

log = Logger()


class StartupError(Exception):
    """The appliance cannot start; the message is one line for the admin."""


def _admin_factory(appliance: Appliance) -> IProtocolFactory:
    from mailbox_appliance.monitor.admin import admin_site

    return admin_site(appliance)


def _station_factory(appliance: Appliance) -> IProtocolFactory:
    from mailbox_appliance.web.site import station_site

    return station_site(appliance)


def _mail_factory(service: str, protocol: str) -> Callable[[Appliance], IProtocolFactory]:
    """The builder of a mail service's factory; ``protocol`` names its package and section."""

    def build(appliance: Appliance) -> IProtocolFactory:
        extra = {}
        if protocol == "smtp":
            from mailbox_appliance.smtp.factory import SMTPFactory as factory_class
        elif protocol == "imap":
            from mailbox_appliance.imap.factory import IMAPFactory as factory_class
        else:
            from mailbox_appliance.pop3.factory import POP3Factory as factory_class

            extra["maildrops"] = appliance.pop3_maildrops
        if protocol == "smtp":
            extra["srs"] = appliance.srs
            extra["detacher"] = appliance.detacher
        return factory_class(
            service,
            reactor=appliance.reactor,
            hostname=appliance.config.hostname,
            store=appliance.store,
            portal=appliance.portal,
            throttle=appliance.login_throttle,
            limiter=getattr(appliance, protocol + "_limiter"),
            settings=getattr(appliance.config, protocol),
            tls_context=appliance.tls_context_factory,
            **extra,
        )

    return build


#: Service name -> builder of its protocol factory.  Services not listed here are not built
#: yet in this version; their listen entries are accepted and reported as not served.
FACTORY_BUILDERS: dict[str, Callable[[Appliance], IProtocolFactory]] = {
    "admin": _admin_factory,
    "smtp": _mail_factory("smtp", "smtp"),
    "submission": _mail_factory("submission", "smtp"),
    "submissions": _mail_factory("submissions", "smtp"),
    "imap": _mail_factory("imap", "imap"),
    "imaps": _mail_factory("imaps", "imap"),
    "pop3": _mail_factory("pop3", "pop3"),
    "pop3s": _mail_factory("pop3s", "pop3"),
    "http": _station_factory,
    "https": _station_factory,
}


def _detacher(config: Config, reactor, store: Store) -> Detacher | None:
    threshold = config.transfer.detach_threshold
    if not threshold:
        return None
    try:
        base_url = public_url(config)
    except StationURLError as e:
        # Called from start(): twistd reports this as a start-up failure, not a traceback.
        raise StartupError(
            f"transfer.detach_threshold: links need the station's address: {e}"
        ) from None
    return Detacher(
        reactor,
        store.blobs,
        threshold=threshold,
        file_expires=config.transfer.file_expires,
        base_url=base_url,
    )


class Appliance:
    """Everything one appliance runs, started and stopped in order."""

    def __init__(self, config: Config, reactor, store: Store | None = None):
        self.config = config
        self.reactor = reactor
        self.store = store or Store.from_config(reactor, config)
        self.passwords = Passwords(
            reactor, config.auth.password_hash, threads=config.auth.hash_threads
        )
        self.portal = make_portal(self.store, self.passwords)
        #: Failed logins of every protocol count together (per IP and per account).
        self.login_throttle = LoginThrottle(
            reactor, ThrottleSettings(**dataclasses.asdict(config.auth.throttle))
        )
        #: Connections of the three SMTP services count together.
        self.smtp_limiter = ConnectionLimiter(
            config.smtp.max_connections, config.smtp.max_connections_per_ip
        )
        #: Connections of the two IMAP services count together.
        self.imap_limiter = ConnectionLimiter(
            config.imap.max_connections, config.imap.max_connections_per_ip
        )
        self.pop3_limiter = ConnectionLimiter(
            config.pop3.max_connections, config.pop3.max_connections_per_ip
        )
        #: Accounts with a POP3 session holding their maildrop (both POP3 services).
        self.pop3_maildrops: set[int] = set()
        self.ports: dict[str, list[IListeningPort]] = {}
        self.queue_runner = build_queue_runner(config, reactor, self.store)
        #: Sender rewriting for forwarded mail (loaded at start); None when turned off.
        self.srs: SRS | None = None
        #: Large attachments of submitted mail become download links (made at start); None
        #: when turned off.
        self.detacher: Detacher | None = None
        #: HTTP Basic for the http and https services together (web/site.py).
        self.http_authenticator = None
        self._gc = LoopingCall(self._collect_garbage)
        self._gc.clock = reactor
        self._tls = None
        self.running = False

    @property
    def tls_context_factory(self):
        if self._tls is None:
            self._tls = server_context_factory(self.config)
        return self._tls

    @inlineCallbacks
    def start(self):
        """Store, background work, then every configured listener; fails on a bind error."""
        self.detacher = _detacher(self.config, self.reactor, self.store)
        try:
            yield self.store.start()
        except BaseException as e:
            yield self.store.stop()
            if isinstance(e, OSError):
                raise StartupError(f"storage: cannot prepare {e.filename}: {e.strerror}") from e
            raise
        if self.config.delivery.srs:
            try:
                self.srs = SRS(load_secret(self.config.srs_secret_path))
            except (OSError, ValueError) as e:
                yield self.store.stop()
                raise StartupError(f"delivery.srs_secret_file: {e}") from e
            self.queue_runner.srs = self.srs
        self.passwords.start()
        self.running = True
        if self.config.storage.gc_interval:
            self._gc.start(self.config.storage.gc_interval, now=False)
        try:
            yield self.queue_runner.startService()
            yield self._listen_all()
        except BaseException:
            yield self.stop()
            raise

    @inlineCallbacks
    def _listen_all(self):
        for service in SERVICES:
            endpoints = self.config.listen.get(service, ())
            if not endpoints:
                continue
            builder = FACTORY_BUILDERS.get(service)
            if builder is None:
                log.info(
                    "listen.{service}: this version does not serve {service} yet; not listening",
                    service=service,
                )
                continue
            factory = builder(self)
            if service in IMPLICIT_TLS:
                factory = TLSMemoryBIOFactory(self.tls_context_factory, False, factory)
            for i, description in enumerate(endpoints):
                endpoint = serverFromString(self.reactor, description)
                try:
                    port = yield endpoint.listen(factory)
                except Exception as e:
                    raise StartupError(
                        f"listen.{service}[{i}]: cannot listen on {description!r}: {e}"
                    ) from e
                self.ports.setdefault(service, []).append(port)
                log.info("{service} listening on {address}", service=service, address=_where(port))

    @inlineCallbacks
    def stop(self):
        """Listeners first, then background work, then the store."""
        ports, self.ports = self.ports, {}
        for service_ports in ports.values():
            for port in service_ports:
                try:
                    yield port.stopListening()
                except Exception:  # one stuck listener must not keep the store running
                    log.failure("stopping the listener on {address} failed", address=_where(port))
        if self._gc.running:
            self._gc.stop()
        if self.queue_runner.running:
            try:
                yield self.queue_runner.stopService()
            except Exception:
                log.failure("stopping the queue runner failed")
        self.queue_runner.resolver.close()
        if self.running:
            self.running = False
            self.passwords.stop()
            yield self.store.stop()

    def address_of(self, service: str, index: int = 0):
        """The bound address of a listener (tests listen on port 0 and ask)."""
        return self.ports[service][index].getHost()

    @inlineCallbacks
    def _collect_garbage(self):
        # One failed sweep must not stop the loop (a LoopingCall dies on an uncaught error).
        try:  # expired station files and unfinished uploads first: they free blobs
            reaped = yield self.store.reap_transfers()
        except Exception:
            log.failure("reaping expired station files failed; will try again")
        else:
            if any(reaped.values()):
                log.info(
                    "expired: {uploads} unfinished uploads, {files} station files",
                    uploads=reaped.get("uploads", 0),
                    files=reaped.get("files", 0),
                )
        try:
            removed = yield self.store.collect_garbage(self.config.storage.gc_grace)
        except Exception:
            log.failure("blob garbage collection failed; will try again")
            return
        if removed:
            log.info("garbage collection removed {n} unreferenced blobs", n=removed)


def _where(port: IListeningPort) -> str:
    host = port.getHost()
    return f"{getattr(host, 'host', host)}:{getattr(host, 'port', '')}"


class ApplianceService(Service):
    """Adapts the Appliance to twistd: a failed start logs one line and exits non-zero."""

    name = "mailbox-appliance"

    def __init__(self, appliance: Appliance):
        self.appliance = appliance

    def startService(self):
        super().startService()
        d = self.appliance.start()
        d.addErrback(self._start_failed)

    def _start_failed(self, failure):
        reason = failure.value if failure.check(StartupError) else failure.getErrorMessage()
        log.critical("cannot start: {reason}", reason=reason)
        if not failure.check(StartupError):
            log.failure("start-up failed", failure)
        reactor = self.appliance.reactor
        reactor.addSystemEventTrigger("after", "shutdown", _exit_failure)
        reactor.stop()

    def stopService(self):
        super().stopService()
        return self.appliance.stop()


def _exit_failure() -> None:
    """twistd has no exit status of its own; leave with 1 once shutdown is done."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
