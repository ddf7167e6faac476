"""Prometheus metrics: live counters from the services' events, and the ledger on each scrape.

Two views, because they answer different questions:

* :class:`PrometheusListener` counts what this process's services did, as
  it happens (a listener: see :mod:`worksync_sa.events`). Counters only go
  up, so Prometheus can take rates and sum them across the fleet.
* :class:`LedgerCollector` reads the table's ledger on every scrape, over a
  sliding window of ticks: the whole fleet's record as one process sees it,
  including what no process was there to count (a tick nobody claimed).
  :func:`ledger_exposition` serves it as a page in one call.

Only this module and the status page import ``prometheus_client`` (the extra
``worksync_sa[prometheus]``). Only the status page (``web/app.py``,
for its ``/metrics``), itself behind the ``web`` extra, imports this module,
so the services never depend on it. It reads the table only through
:class:`~worksync_sa.ledger.Ledger` and never writes.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
    )
    from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as exc:
    raise ImportError(
        "worksync_sa.metrics needs prometheus_client: pip install 'worksync_sa[prometheus]'"
    ) from exc

from .durations import as_timedelta
from .errors import InvalidArgumentError
from .events import Event
from .ledger import PAGE_LIMIT, Ledger, TickEntry
from .models import DEFAULT_TABLE, checked_moment

__all__ = [
    "EXPOSITION_CONTENT_TYPE",
    "LAG_BUCKETS",
    "LedgerCollector",
    "PrometheusListener",
    "ledger_exposition",
]

LAG_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Upper bounds, in seconds, of the claim lag histograms (``+Inf`` is added).

A healthy claim starts within a worker's poll of its tick, well under a
second to a few seconds, so the low end is fine-grained. The default grace
is 60 s, so 30 s and 60 s show ticks that nearly went missed, and 120 s to
10 minutes cover works with a longer grace, catch-up after an outage and
claims by sequence long after the tick. Fourteen bounds per work keep the
series count small.
"""

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :func:`ledger_exposition`'s bytes, for a web app's header."""

DEFAULT_WINDOW = timedelta(hours=1)
_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _checked_namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidArgumentError(
            f"namespace must be letters, digits or underscores (a metric name prefix), "
            f"got {namespace!r}"
        )
    return namespace


def _lag_seconds(lag: float) -> float:
    """A claim made before its tick (by sequence, early) was not late: it counts as 0."""
    return max(lag, 0.0)


class PrometheusListener(Collector):
    """A listener that counts the services' events into Prometheus metrics.

    Give one instance to every service of the process (it is thread-safe)::

        metrics = PrometheusListener()
        Scheduler(engine, works, listeners=[metrics])
        WorkSync(engine, listeners=[metrics])

    It registers itself on ``registry`` (``None``: prometheus_client's
    default registry, the one ``start_http_server`` serves) as one
    collector, so registration is all or nothing. A second listener with the
    same ``namespace`` on the same registry would repeat every series; it
    raises :class:`~worksync_sa.errors.InvalidArgumentError` (a ``ValueError``)
    saying to share the first one or pick another namespace.

    The counters are this process's own; Prometheus sums them across the
    fleet. ``claim_lag_seconds`` observes each claim's lag when the event
    carries it (``event.lag``); claims without it are counted but not observed.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "worksync"
    ) -> None:
        namespace = _checked_namespace(namespace)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=None)

        self.created = counter("rows_created", "Rows the schedulers of this process created.")
        self.claimed = counter("rows_claimed", "Claims this process took.", ("work",))
        self.finished = counter(
            "rows_finished",
            "Claims this process finished, by status (SUCCESS, FAILED).",
            ("work", "status"),
        )
        self.recovered = counter(
            "rows_recovered",
            "Rows whose lease ran out, as this process's recovery closed them: "
            "status FAILED, or QUEUED when re-queued.",
            ("work", "status"),
        )
        self.missed = counter(
            "rows_missed",
            "Rows nobody claimed within grace, as this process's recovery closed them.",
            ("work",),
        )
        self.lag = Histogram(
            "claim_lag_seconds",
            "Seconds from a tick to its claim, by the database clock.",
            ("work",),
            namespace=namespace,
            buckets=LAG_BUCKETS,
            registry=None,
        )
        self._metrics = (
            self.created,
            self.claimed,
            self.finished,
            self.recovered,
            self.missed,
            self.lag,
        )
        target = REGISTRY if registry is None else registry
        try:
            target.register(self)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"a PrometheusListener with namespace {namespace!r} is already registered "
                "on this registry: give that one listener to every service, or pass "
                "another namespace or registry"
            ) from exc

    def __call__(self, event: Event) -> None:
        action, work = event.action, event.name or ""
        if action == "created":
            self.created.inc(event.count)
        elif action == "claimed":
            self.claimed.labels(work).inc(event.count)
            if event.lag is not None:
                self.lag.labels(work).observe(_lag_seconds(event.lag))
        elif action == "finished":
            self.finished.labels(work, event.status or "").inc(event.count)
        elif action == "recovered":
            self.recovered.labels(work, event.status or "").inc(event.count)
        elif action == "missed":
            self.missed.labels(work).inc(event.count)

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield from metric.collect()

    def describe(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield from metric.describe()


_FIGURES: tuple[tuple[str, str], ...] = (
    ("ticks", "Ticks in the window."),
    ("claimed_rows", "Rows of the window's ticks that a worker claimed."),
    ("succeeded_rows", "Rows of the window's ticks that finished with success()."),
    ("failed_rows", "Rows of the window's ticks that finished with fail() by their worker."),
    (
        "recovered_rows",
        "Rows of the window's ticks whose lease ran out (failed by recovery, or re-queued).",
    ),
    ("missed_rows", "Rows of the window's ticks nobody claimed within grace."),
    ("surplus_rows", "Rows of the window's ticks closed unclaimed as settings changed."),
    ("queued_rows", "Rows of the window's ticks waiting now: due, within grace or not yet closed."),
    ("running_rows", "Rows of the window's ticks claimed and running now."),
)


@dataclass
class _Fold:
    """One work's figures over the window, folded tick by tick (bounded: no list of entries)."""

    figures: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((figure for figure, _ in _FIGURES), 0)
    )
    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0

    def add(self, entry: TickEntry) -> None:
        figures = self.figures
        figures["ticks"] += 1
        # The sum TickEntry.claimed makes: surplus rows were never claimed.
        figures["claimed_rows"] += entry.created - entry.queued - entry.missed - entry.surplus
        figures["succeeded_rows"] += entry.succeeded
        figures["failed_rows"] += entry.failed
        figures["recovered_rows"] += entry.recovered
        figures["missed_rows"] += entry.missed
        figures["surplus_rows"] += entry.surplus
        figures["queued_rows"] += entry.queued
        figures["running_rows"] += entry.running
        if entry.lag is not None:
            seconds = _lag_seconds(entry.lag.total_seconds())
            self.lag_counts[bisect_left(LAG_BUCKETS, seconds)] += 1
            self.lag_sum += seconds

    def lag_buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, as a histogram exposes them."""
        bounds = [repr(bound) for bound in LAG_BUCKETS] + ["+Inf"]  # as Histogram writes them
        buckets, total = [], 0
        for bound, count in zip(bounds, self.lag_counts, strict=True):
            total += count
            buckets.append((bound, float(total)))
        return buckets


class LedgerCollector(Collector):
    """The ledger of the last ``window`` of ticks, read on each scrape, as gauges per work.

    Register it where the status page's ``/metrics`` is served::

        REGISTRY.register(LedgerCollector(engine, window=timedelta(hours=1)))

    Every figure is over the ticks in ``[now - window, now)``, so it rises
    and falls as the window slides: gauges, not counters (a counter that
    falls reads as a process restart to ``rate()``). The lag is a gauge
    histogram for the same reason: its buckets hold the ticks in the window
    now, so ``histogram_quantile(0.95, <namespace>_ledger_claim_lag_seconds_bucket)``
    is the window's p95 with no ``rate()``. Its lag is each tick's first
    claim, as in the ledger; the listener's is every claim.

    A scrape is one keyset page of the ledger per 10,000 ticks in the window
    (each with a read of the rows other programs wrote undated, and of one
    row of settings per work with such rows near the window), each an
    aggregate served by the ledger index; the window, not the table, bounds
    what is read, and the figures are folded as the pages come, never held. The
    cost follows the ticks in the window (reading them is most of it), so
    per-second works want a shorter window than the hour by default. A tick
    and its work appear once they are in the window: a work with no tick in
    it has no series. ``clock`` gives "now" (this process's clock, aware
    UTC); tests pass their own. An error reading the table fails the scrape,
    which Prometheus records as the target being down. ``sequence_zone`` is
    the zone of the Go original's labels, for its rows no scheduler of ours
    dated (see :class:`~worksync_sa.Ledger`). Two collectors on one
    registry would repeat each other's series, which the registry refuses
    (``ValueError``): give the second another ``namespace`` or registry.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = DEFAULT_TABLE,
        window: timedelta | str = DEFAULT_WINDOW,
        namespace: str = "worksync",
        clock: Callable[[], datetime] = _utcnow,
        sequence_zone: str | None = None,
    ) -> None:
        try:
            self.window = as_timedelta(window, "window")
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if not callable(clock):
            raise InvalidArgumentError("clock must be a function returning an aware datetime")
        self._prefix = f"{_checked_namespace(namespace)}_ledger_"
        self._clock = clock
        self._ledger = Ledger(engine, table=table, sequence_zone=sequence_zone)

    def close(self) -> None:
        """Give back the connections the collector's ledger holds (a later scrape opens one)."""
        self._ledger.close()

    def collect(self) -> Iterator[Metric]:
        now = checked_moment(self._clock(), "clock()")
        folds: dict[str, _Fold] = {}
        for entry in self._ledger.entries(since=now - self.window, until=now, page_size=PAGE_LIMIT):
            folds.setdefault(entry.name, _Fold()).add(entry)
        return self._families(folds)

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering never reads the table."""
        return self._families({})

    def _families(self, folds: dict[str, _Fold]) -> Iterator[Metric]:
        prefix = self._prefix
        window = GaugeMetricFamily(
            f"{prefix}window_seconds", "How far back the ledger figures look, in seconds."
        )
        window.add_metric([], self.window.total_seconds())
        yield window
        works = sorted(folds.items())
        for figure, doc in _FIGURES:
            family = GaugeMetricFamily(f"{prefix}{figure}", doc, labels=["work"])
            for work, fold in works:
                family.add_metric([work], fold.figures[figure])
            yield family
        lag = GaugeHistogramMetricFamily(
            f"{prefix}claim_lag_seconds",
            "Seconds from each tick in the window to its first claim, by the database clock.",
            labels=["work"],
        )
        for work, fold in works:
            lag.add_metric([work], fold.lag_buckets(), fold.lag_sum)
        yield lag


def ledger_exposition(
    engine: Engine,
    *,
    table: str = DEFAULT_TABLE,
    window: timedelta | str = DEFAULT_WINDOW,
    namespace: str = "worksync",
    now: datetime | None = None,
    sequence_zone: str | None = None,
) -> bytes:
    """The ledger's metrics as a ``/metrics`` page body (serve it as ``EXPOSITION_CONTENT_TYPE``).

    One call for a web app: a :class:`LedgerCollector` on a private
    registry, so nothing else of the process (and no second call) shares
    its series. ``now`` defaults to this process's clock. It opens one
    connection and closes it; a page scraped every few seconds can keep a
    ``LedgerCollector`` on a registry of its own and call
    ``generate_latest`` on that instead. ``sequence_zone``: as for
    :class:`LedgerCollector`.
    """
    at = _utcnow() if now is None else checked_moment(now, "now")
    collector = LedgerCollector(
        engine,
        table=table,
        window=window,
        namespace=namespace,
        clock=lambda: at,
        sequence_zone=sequence_zone,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        return generate_latest(registry)
    finally:
        collector.close()
