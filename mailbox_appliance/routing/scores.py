"""What the appliance has measured about each way out: the scoreboard adaptive routing reads.

Every attempt the queue runner makes on a route to a destination domain feeds exponentially
weighted moving averages (EWMA) of the connect time, the DATA throughput and the failure rate,
so old measurements fade and a route that changes is noticed within a few deliveries.  The
runner persists the board (``rows``/``load``) so a restart does not forget, and the CLI prints
the same rows with :func:`format_table`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from twisted.logger import Logger

from mailbox_appliance.routing import Attempt

log = Logger()

#: Estimates for a route that has samples but never reached a session or sent DATA: modest
#: enough that a measured route usually wins, yet not so bad that the route is never retried.
ASSUMED_CONNECT = 5.0
ASSUMED_THROUGHPUT = 100_000.0
#: The failure inflation stops here: a route failing every time costs 20 times its speed.
MIN_SUCCESS = 0.05
#: Above this failure EWMA the table calls a route "failing".
FAILING = 0.5
#: The domain of the row that holds a route's DNSBL listing (no real domain is empty).
LISTING_DOMAIN = ""


@dataclass
class Score:
    """The moving averages of one route to one destination domain."""

    route: str
    domain: str
    samples: int = 0
    #: EWMA seconds from starting the connection to a ready session.
    connect: float | None = None
    #: EWMA bytes per second of DATA transfers.
    throughput: float | None = None
    #: EWMA of 1.0 for a failed attempt and 0.0 for a successful one.
    failure: float = 0.0
    last_reply: str | None = None
    last_ok: float | None = None
    last_failure: float | None = None

    def cost(self, size: int) -> float:
        """Expected seconds to deliver ``size`` bytes here, inflated by the failure rate (a
        failed try costs a retry elsewhere); 0 when never tried, so unknown routes get tried."""
        if self.samples == 0:
            return 0.0
        connect = self.connect if self.connect is not None else ASSUMED_CONNECT
        throughput = self.throughput if self.throughput else ASSUMED_THROUGHPUT
        return (connect + size / throughput) / max(1.0 - self.failure, MIN_SUCCESS)

    @property
    def last_attempt(self) -> float | None:
        times = [t for t in (self.last_ok, self.last_failure) if t is not None]
        return max(times) if times else None


_STATE_FIELDS = tuple(f.name for f in fields(Score) if f.name not in ("route", "domain"))


class Scoreboard:
    """Scores per (route, domain) and the DNSBL listing per route, shared by every policy."""

    def __init__(self, reactor, smoothing: float = 0.3):
        self.reactor = reactor
        #: Weight of the newest measurement (routing.adaptive.smoothing).
        self.smoothing = smoothing
        #: Changed since the runner last saved ``rows()``; the runner clears it.
        self.dirty = False
        #: Route name -> the DNSBL zone its public address is listed on (set aside).
        self.listed: dict[str, str] = {}
        #: Routes whose listing has been checked, so a delisting is saved too.
        self._checked: set[str] = set()
        self._scores: dict[tuple[str, str], Score] = {}

    def record(self, attempt: Attempt) -> Score:
        """Fold one attempt into the averages (the first sample sets them)."""
        key = (attempt.route, attempt.domain.lower())
        score = self._scores.get(key)
        if score is None:
            score = self._scores[key] = Score(*key)
        when = attempt.when or self.reactor.seconds()
        score.samples += 1
        score.failure = self._average(score.failure, 0.0 if attempt.ok else 1.0, score.samples)
        if attempt.connect_seconds is not None:
            score.connect = self._average(score.connect, attempt.connect_seconds)
        if attempt.bytes_sent > 0 and attempt.data_seconds > 0:
            rate = attempt.bytes_sent / attempt.data_seconds
            score.throughput = self._average(score.throughput, rate)
        if attempt.reply is not None:
            score.last_reply = attempt.reply
        if attempt.ok:
            score.last_ok = when
        else:
            score.last_failure = when
        self.dirty = True
        return score

    def _average(self, old: float | None, new: float, samples: int = 0) -> float:
        if old is None or samples == 1:
            return float(new)
        return old + self.smoothing * (new - old)

    def score(self, route: str, domain: str) -> Score | None:
        return self._scores.get((route, domain.lower()))

    def scores(self) -> list[Score]:
        return sorted(self._scores.values(), key=lambda s: (s.route, s.domain))

    def set_listed(self, route: str, zone: str | None) -> bool:
        """Record a DNSBL check of ``route``; True when its listing changed."""
        first = route not in self._checked
        self._checked.add(route)
        if self.listed.get(route) == zone:
            if first:
                self.dirty = True  # nothing changed, but the row is new
            return False
        if zone is None:
            del self.listed[route]
        else:
            self.listed[route] = zone
        self.dirty = True
        return True

    def rows(self) -> list[dict[str, Any]]:
        """Plain JSON-able rows for the database: one per (route, domain), and one with
        domain "" per checked route holding its listing (None once delisted)."""
        rows: list[dict[str, Any]] = [
            {"route": route, "domain": LISTING_DOMAIN, "state": {"listed": self.listed.get(route)}}
            for route in sorted(self._checked)
        ]
        for score in self.scores():
            state = asdict(score)
            del state["route"], state["domain"]
            rows.append({"route": score.route, "domain": score.domain, "state": state})
        return rows

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Replace the board with saved rows; a malformed row is logged and skipped, so a
        bad row never stops the runner."""
        self._scores.clear()
        self.listed.clear()
        self._checked.clear()
        for row in rows:
            try:
                route, domain, state = str(row["route"]), str(row["domain"]), row["state"]
                if domain == LISTING_DOMAIN:
                    zone = state.get("listed")
                    self._checked.add(route)
                    if zone:
                        self.listed[route] = str(zone)
                    continue
                known = {k: v for k, v in state.items() if k in _STATE_FIELDS}
                self._scores[(route, domain.lower())] = Score(route, domain.lower(), **known)
            except (KeyError, TypeError, AttributeError, ValueError):
                log.warn("ignoring a malformed route score row: {row!r}", row=row)
        self.dirty = False


def format_table(rows: list[dict[str, Any]], now: float) -> str:
    """The scoreboard for an admin (``mailbox-appliance routes``): one line per route and
    destination domain, listed routes first and marked on every line."""
    listed: dict[str, str] = {}
    scores: list[Score] = []
    for row in rows:
        state = row.get("state") or {}
        if row.get("domain") == LISTING_DOMAIN:
            if state.get("listed"):
                listed[row["route"]] = state["listed"]
            continue
        known = {k: v for k, v in state.items() if k in _STATE_FIELDS}
        scores.append(Score(row["route"], row["domain"], **known))
    # A listed route nothing was measured on still gets its line.
    measured = {s.route for s in scores}
    scores += [Score(route, "*") for route in listed if route not in measured]
    scores.sort(key=lambda s: (s.route not in listed, s.route, s.domain))

    header = ("ROUTE", "DOMAIN", "STATE", "SAMPLES", "CONNECT", "THROUGHPUT", "FAILURE", "AGE")
    lines = [header]
    replies = ["LAST REPLY"]
    for s in scores:
        if s.route in listed:
            state = f"listed on {listed[s.route]}"
        else:
            state = "failing" if s.failure > FAILING else "ok"
        last = s.last_attempt
        lines.append(
            (
                s.route,
                s.domain,
                state,
                str(s.samples),
                "-" if s.connect is None else f"{s.connect * 1000:.0f} ms",
                _rate(s.throughput),
                f"{s.failure * 100:.0f}%",
                "-" if last is None else _age(now - last),
            )
        )
        replies.append(_shorten(s.last_reply or "-", 60))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        + "  "
        + reply
        for line, reply in zip(lines, replies, strict=True)
    ]
    if not scores:
        text.append("(nothing measured yet)")
    return "\n".join(line.rstrip() for line in text) + "\n"


def _rate(throughput: float | None) -> str:
    if throughput is None:
        return "-"
    if throughput >= 1_000_000:
        return f"{throughput / 1_000_000:.1f} MB/s"
    return f"{throughput / 1000:.0f} KB/s"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
