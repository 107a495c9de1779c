"""The outbound queue runner: claims due queue rows and delivers them.

- Relay rows for the same message, sender and destination domain go as one transaction (up
  to ``delivery.max_recipients``); transactions wait per destination domain, and each domain
  gets at most ``max_connections_per_domain`` of the ``max_connections`` connections.
- A connection is reused for the next transaction to its domain, and waits ``reuse_time`` for
  more mail before QUIT.
- The routing policy names the routes; a route's hops are tried in order, and a failed hop or
  route (no connection, refused session, TLS trouble, 4xx for the whole transaction, dropped
  connection) is skipped at once, within the same attempt (RFC 5321 §5.1: try the next MX).
  Every attempt is measured and reported to the scoreboard and the policy.
- Each recipient's fate is settled in the store (fate.py): sent, retried with backoff, or
  bounced; bounce and delay rows become DSNs (notices.py).

New mail is claimed at once (the store calls :meth:`QueueRunner.wake` after a commit that
queued mail); retries that fell due and admin changes are found by polling.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailbox_appliance.config_delivery import host_port
from mailbox_appliance.routing import (
    Attempt,
    Envelope,
    Hop,
    Route,
    RoutingContext,
    RoutingError,
    build_policy,
)
from mailbox_appliance.routing.dns import Resolver
from mailbox_appliance.routing.scores import Scoreboard
from mailbox_appliance.smtp import fate as fates
from mailbox_appliance.smtp.client_api import (
    ContentError,
    SessionLost,
    SMTPFailure,
    TLSUnavailable,
    Transaction,
)
from mailbox_appliance.smtp.connect import connect_hop
from mailbox_appliance.smtp.notices import notice_key, send_notice
from mailbox_appliance.store.blob_rows import utcnow
from mailbox_appliance.store.queue import Settlement

log = Logger()

#: Claimed rows the runner holds in memory at most; the rest wait in the store.
MAX_IN_HAND = 5000
#: Rows waiting for one domain beyond which no more of its rows are claimed, so that a slow
#: domain's backlog never fills the runner's hands while mail for others waits.
MAX_IN_HAND_PER_DOMAIN = 500
CLAIM_BATCH = 500
#: Content up to this size is read in one trip (inline blobs live in the database).
SMALL_CONTENT = 256 * 1024
#: Seconds between saves of the route scores (``mailbox-appliance routes``).
SCORE_SAVE_INTERVAL = 10.0
#: Seconds a stop waits for workers to wind down (a connect or DNS lookup may take longer).
STOP_GRACE = 5.0


class Job:
    """One transaction to send: one message from one sender to recipients at one domain."""

    def __init__(self, dest: Destination, rows: list[dict[str, Any]]):
        self.dest = dest
        self.domain = dest.domain
        self.rows = rows
        first = rows[0]
        self.sha256 = first["blob_sha256"]
        self.skip = first["skip_bytes"]
        self.size = first["size"]
        self.sender = first["sender"]
        self.recipients = tuple(dict.fromkeys(row["recipient"] for row in rows))
        self.envelope = Envelope(self.sender, self.recipients, self.size, first["account_id"])
        #: The content itself when it is small and inline (it came with the claim).
        self.content: bytes | None = first.get("content")
        #: The last temporary failure: what the rows get if no hop takes the message.
        self.trouble = fates.temporary("4.4.1", "no attempt was made")


class Destination:
    """The jobs waiting for one domain, and the workers sending them."""

    def __init__(self, domain: str):
        self.domain = domain
        self.jobs: deque[Job] = deque()
        self.workers = 0
        #: Claimed rows for this domain, waiting or being sent.
        self.rows = 0
        #: Workers with an open connection, waiting for the next job (connection reuse).
        self.idle: list[Deferred] = []


class QueueRunner(Service):
    name = "queue-runner"

    def __init__(self, reactor, store, config, policy, scoreboard, helo: str | None = None):
        self.reactor = reactor
        self.store = store
        self.config = config
        self.delivery = config.delivery
        self.policy = policy
        self.scoreboard = scoreboard
        self.helo = helo or config.delivery.helo or config.hostname
        self.destinations: dict[str, Destination] = {}
        self.in_hand: set[int] = set()
        self.workers = 0
        self.sessions: set[Any] = set()
        self._pumping = False
        self._again = False
        self._full = False  # the last claim found no room: claim again when rows settle
        self._poll = LoopingCall(self.wake)
        self._poll.clock = reactor
        self._save = LoopingCall(self._save_scores)
        self._save.clock = reactor
        self._pending: set[Deferred] = set()
        self.stopping = False
        #: The DNS resolver the policy uses (closed by the appliance at stop).
        self.resolver: Resolver | None = None
        #: smtp/srs.SRS, set by the appliance: DSNs about forwarded mail go to the real sender.
        self.srs = None

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> Deferred:
        super().startService()
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        released = await self.store.release_claims()
        if released:
            log.info("queue: {n} rows in hand when the last run ended are due again", n=released)
        self.scoreboard.load(await self.store.routing_state())
        await _maybe_deferred(self.policy.start())
        self.store.queue_listeners.append(self.wake)
        self._poll.start(self.delivery.poll_interval, now=True)
        self._save.start(SCORE_SAVE_INTERVAL, now=False)

    def stopService(self) -> Deferred:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Drop connections; rows in hand stay claimed and are due again at the next start."""
        self.stopping = True
        if self.wake in self.store.queue_listeners:
            self.store.queue_listeners.remove(self.wake)
        for loop in (self._poll, self._save):
            if loop.running:
                loop.stop()
        for session in list(self.sessions):
            session.abort()
        for dest in list(self.destinations.values()):
            waiters, dest.idle = dest.idle, []
            for waiter in waiters:
                _fire(waiter)
        # The workers see the aborts and leave their rows claimed (not an attempt); wait for
        # them, so that none writes to the store after it has stopped.
        gate: Deferred = Deferred()
        DeferredList(list(self._pending), consumeErrors=True).addBoth(lambda _: _fire(gate))
        timer = self.reactor.callLater(STOP_GRACE, _fire, gate)
        await gate
        if timer.active():
            timer.cancel()
        await _maybe_deferred(self.policy.stop())
        await self._save_scores()

    # -- claiming --------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due rows now (coalesced: one claim runs at a time)."""
        if self.stopping or self.delivery.hold:
            return
        if self._pumping:
            self._again = True
            return
        self._track(ensureDeferred(self._pump()), "claiming queued mail")

    async def _pump(self) -> None:
        self._pumping = True
        try:
            while not self.stopping:
                self._again = False
                room = min(CLAIM_BATCH, MAX_IN_HAND - len(self.in_hand))
                self._full = room <= 0
                if self._full:
                    break
                rows = await self.store.claim_due(room, self._busy_domains())
                self._take(rows)
                if len(rows) < room and not self._again:
                    break
        finally:
            self._pumping = False

    def _busy_domains(self) -> list[str]:
        return [d.domain for d in self.destinations.values() if d.rows >= MAX_IN_HAND_PER_DOMAIN]

    def _take(self, rows: list[dict[str, Any]]) -> None:
        relay: dict[tuple, list[dict[str, Any]]] = {}
        notices: dict[tuple, list[dict[str, Any]]] = {}
        for row in rows:
            self.in_hand.add(row["id"])
            if row["kind"] == "relay":
                domain = row["recipient"].rpartition("@")[2].lower()
                key = (domain, row["blob_sha256"], row["skip_bytes"], row["sender"])
                relay.setdefault(key, []).append(row)
            else:
                notices.setdefault(notice_key(row), []).append(row)
        limit = self.delivery.max_recipients
        for (domain, *_), group in relay.items():
            dest = self.destinations.get(domain)
            if dest is None:
                dest = self.destinations[domain] = Destination(domain)
            dest.rows += len(group)
            for i in range(0, len(group), limit):
                dest.jobs.append(Job(dest, group[i : i + limit]))
            self._dispatch(dest)
        for group in notices.values():
            self._track(ensureDeferred(self._notify(group)), "sending a DSN")

    async def _notify(self, rows: list[dict[str, Any]]) -> None:
        try:
            await send_notice(self.store, self.config, rows, self.srs)
        except Exception:
            log.failure("DSN to <{sender}> not sent; will try again", sender=rows[0]["sender"])
            later = utcnow() + datetime.timedelta(seconds=self.delivery.retry.first)
            await self.store.settle([Settlement(row["id"], "release", later) for row in rows])
        finally:
            self._let_go(rows)

    # -- scheduling ------------------------------------------------------------------------

    def _dispatch(self, dest: Destination) -> None:
        """Give the domain's waiting jobs to its idle connections, then to new workers."""
        unassigned = len(dest.jobs)
        while unassigned and dest.idle:
            _fire(dest.idle.pop())
            unassigned -= 1
        limits = self.delivery
        while unassigned and dest.workers < limits.max_connections_per_domain:
            if self.stopping:
                return
            if self.workers >= limits.max_connections:
                self._close_one_idle()  # it frees a slot, and _worker_done comes back here
                return
            dest.workers += 1
            self.workers += 1
            unassigned -= 1
            self._track(ensureDeferred(self._work(dest)), f"delivering to {dest.domain}")

    def _close_one_idle(self) -> None:
        """All connections busy or idle: an idle one (of a domain with nothing waiting) goes."""
        for other in list(self.destinations.values()):
            if other.idle and not other.jobs:
                _fire(other.idle.pop())
                return

    def _worker_done(self, dest: Destination) -> None:
        dest.workers -= 1
        self.workers -= 1
        if not dest.jobs and not dest.workers:
            self.destinations.pop(dest.domain, None)
        # A freed connection slot may go to any domain that is waiting.
        for other in list(self.destinations.values()):
            if self.workers >= self.delivery.max_connections:
                break
            self._dispatch(other)

    def _track(self, d: Deferred, what: str) -> None:
        self._pending.add(d)

        def _done(result):
            self._pending.discard(d)
            return result

        d.addBoth(_done).addErrback(lambda f: log.failure("queue runner: {what}", f, what=what))

    # -- one worker: one connection at a time, for one domain --------------------------------

    async def _work(self, dest: Destination) -> None:
        try:
            while dest.jobs and not self.stopping:
                job = dest.jobs.popleft()
                await self._attempt(dest, job)
        finally:
            self._worker_done(dest)

    async def _attempt(self, dest: Destination, job: Job) -> None:
        """Deliver ``job`` (and, over the same connection, more of this domain's jobs)."""
        try:
            routes = await self.policy.routes(job.envelope, dest.domain)
        except RoutingError as e:
            fate = (fates.permanent if e.permanent else fates.temporary)(e.status, e.text)
            await self._settle(job, lambda row: fate)
            return
        except Exception:  # a broken plug-in must not leave rows claimed forever
            log.failure("routing policy {policy!r} failed", policy=self.config.routing.policy)
            fate = fates.temporary("4.3.0", "the routing policy failed (see the log)")
            await self._settle(job, lambda row: fate)
            return
        pending: Job | None = job
        for route in routes:
            for hop in route.hops:
                if pending is None or self.stopping:
                    break
                pending = await self._use_hop(dest, route, hop, pending)
        if pending is not None and self.stopping:
            # Stopped, not failed: the rows stay claimed and are due again at the next start.
            self._let_go(pending.rows, pending.dest)
        elif pending is not None:
            await self._settle(pending, lambda row: pending.trouble)

    async def _use_hop(self, dest: Destination, route: Route, hop: Hop, job: Job) -> Job | None:
        """Send ``job`` and then the domain's next jobs through one connection to ``hop``.

        Returns the job still to send when this hop failed it as a whole (the caller moves on
        to the next hop), or None once this hop has decided every job it took.
        """
        if route.source and _family(route.source) != _family(hop.address):
            return job
        started = self.reactor.seconds()
        try:
            session, info = await connect_hop(self.reactor, self.config, route, hop, self.helo)
        except Exception as e:  # refused, TLS trouble, no connection: the next hop
            if self.stopping:
                return job
            job.trouble = _trouble(e, hop)
            self._report(route, dest.domain, hop, False, reply=job.trouble.reason)
            return job
        if self.stopping:
            await session.quit()
            return job
        self.sessions.add(session)
        connect_seconds = self.reactor.seconds() - started
        try:
            while job is not None:
                tx = Transaction(job.sender, job.recipients, job.size, self._reader(job))
                try:
                    result = await session.send(tx)
                except ContentError as e:  # our side: the route is not to blame
                    if self.stopping:
                        return job
                    trouble = fates.temporary("4.3.0", f"cannot read the message: {e}")
                    await self._settle(job, lambda row, t=trouble: t)
                    return None
                except (SMTPFailure, SessionLost) as e:
                    if self.stopping:  # the stop aborted the session: not an attempt
                        return job
                    job.trouble = _trouble(e, hop)
                    self._report(route, dest.domain, hop, False, connect_seconds, e=job.trouble)
                    return job
                decided = _whole_transaction_failed(result)
                if decided is not None and decided.kind == "temporary":
                    job.trouble = fates.Fate(*decided[:3], hop.host)
                    self._report(route, dest.domain, hop, False, connect_seconds, e=decided)
                    return job
                self._report(
                    route,
                    dest.domain,
                    hop,
                    True,
                    connect_seconds,
                    bytes_sent=result.bytes_sent,
                    data_seconds=result.data_seconds,
                    reply=str(result.data or result.mail),
                    tls=info.tls,
                )
                connect_seconds = None
                await self._settle(job, lambda row, r=result: _recipient_fate(r, row, hop))
                job = await self._next_job(dest, session)
                if job is not None and not await self._still_first(route, job):
                    dest.jobs.appendleft(job)  # the policy now prefers another route
                    job = None
            return None
        finally:
            self.sessions.discard(session)
            await session.quit()

    async def _next_job(self, dest: Destination, session) -> Job | None:
        """The domain's next job for this open connection, waiting ``reuse_time`` for one."""
        if not dest.jobs and session.reusable and not self.stopping:
            waiter: Deferred = Deferred()
            dest.idle.append(waiter)
            timer = self.reactor.callLater(self.delivery.reuse_time, _fire, waiter)
            await waiter
            if timer.active():
                timer.cancel()
            if waiter in dest.idle:
                dest.idle.remove(waiter)
        if dest.jobs and session.reusable and not self.stopping:
            return dest.jobs.popleft()
        return None

    async def _still_first(self, route: Route, job: Job) -> bool:
        """Whether the policy still puts ``route`` first for ``job``: an open connection is
        reused only then, so an adaptive policy's choice is not undone by connection reuse."""
        try:
            routes = await self.policy.routes(job.envelope, job.domain)
        except Exception:  # RoutingError or a broken plug-in: the worker asks again, settles
            return False
        return bool(routes) and routes[0].name == route.name

    def _reader(self, job: Job) -> Callable[[int, int], Deferred[bytes]]:
        blobs, sha, skip = self.store.blobs, job.sha256, job.skip
        if job.content is not None:
            content = job.content

            def read_held(offset: int, length: int) -> Deferred[bytes]:
                return succeed(content[skip + offset : skip + offset + length])

            return read_held
        if job.size + skip <= SMALL_CONTENT:

            def read_small(offset: int, length: int) -> Deferred[bytes]:
                start = skip + offset
                d = blobs.read_ranges([(sha, start, start + min(length, job.size - offset))])
                return d.addCallback(lambda chunks: chunks[0])

            return read_small
        return lambda offset, length: blobs.read_file_chunk(sha, skip + offset, length)

    # -- outcomes --------------------------------------------------------------------------

    def _report(self, route, domain, hop, ok, connect_seconds=None, *, e=None, **kw) -> None:
        if e is not None:
            kw["reply"] = e.reason
        attempt = Attempt(
            route.name, domain, hop, ok, connect_seconds, when=self.reactor.seconds(), **kw
        )
        self.scoreboard.record(attempt)
        try:
            self.policy.report(attempt)
        except Exception:
            log.failure("routing policy: report failed")

    async def _settle(self, job: Job, fate_of: Callable[[dict[str, Any]], fates.Fate]) -> None:
        now = utcnow()
        decided = [(row, fate_of(row)) for row in job.rows]
        settlements = [fates.settlement(row, fate, now, self.delivery) for row, fate in decided]
        try:
            await self.store.settle(settlements)
        finally:
            self._let_go(job.rows, job.dest)
        for (row, fate), s in zip(decided, settlements, strict=True):
            log.info(
                "{queue_id}: to=<{to}> relay={relay} status={status} ({reason})",
                queue_id=row["queue_id"] or f"queue row {row['id']}",
                to=row["recipient"],
                relay=fate.remote_mta or "none",
                status={"retry": "deferred", "bounce": "bounced"}.get(s.action, s.action),
                reason=fate.reason,
            )

    def _let_go(self, rows: list[dict[str, Any]], dest: Destination | None = None) -> None:
        """Rows settled (or left claimed at a stop): room for more claims."""
        self.in_hand.difference_update(row["id"] for row in rows)
        if dest is not None:
            dest.rows -= len(rows)
        if self._full:
            self._full = False
            self.wake()

    async def _save_scores(self) -> None:
        if not self.scoreboard.dirty:
            return
        self.scoreboard.dirty = False
        try:
            await self.store.save_routing_state(self.scoreboard.rows())
        except Exception:
            self.scoreboard.dirty = True
            log.failure("saving route scores failed; will try again")


def _recipient_fate(result, row: dict[str, Any], hop: Hop) -> fates.Fate:
    reply = result.outcome(row["recipient"])
    return fates.fate_of_reply(reply.code, reply.enhanced, reply.text, hop.host)


def _whole_transaction_failed(result) -> fates.Fate | None:
    """MAIL or the content refused for everyone: the transaction's fate, else None."""
    for reply in (result.mail, result.data):
        if reply is not None and reply.code >= 400:
            return fates.fate_of_reply(reply.code, reply.enhanced, reply.text, None)
    return None


def _trouble(e: BaseException, hop: Hop) -> fates.Fate:
    """A failure before or during a transaction, as a temporary fate (the next hop, or the
    next attempt, may do better)."""
    where = f"{hop.host}[{hop.address}]:{hop.port}"
    reply = getattr(e, "reply", None)
    if reply is not None:
        return fates.temporary("4.4.0", f"{where} said: {reply}", hop.host)
    if isinstance(e, SessionLost):
        return fates.temporary("4.4.2", f"{where}: lost connection ({e.reason})", hop.host)
    if isinstance(e, TLSUnavailable):
        return fates.temporary("4.7.5", f"{where}: TLS is required but failed: {e}", hop.host)
    return fates.temporary("4.4.1", f"{where}: cannot connect: {e}", hop.host)


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def _fire(waiter: Deferred) -> None:
    if not waiter.called:
        waiter.callback(None)


def _maybe_deferred(value) -> Deferred:
    return value if isinstance(value, Deferred) else succeed(value)


def build_queue_runner(config, reactor, store) -> QueueRunner:
    """The runner with the configured resolver, scoreboard and routing policy plug-in."""
    nameservers = [host_port(server, 53) for server in config.dns.nameservers]
    resolver = Resolver(reactor, nameservers, config.dns.timeout)
    scoreboard = Scoreboard(reactor, smoothing=config.routing.adaptive.smoothing)
    context = RoutingContext(reactor, config, resolver, scoreboard, random.Random())
    runner = QueueRunner(reactor, store, config, build_policy(context), scoreboard)
    runner.resolver = resolver
    return runner
