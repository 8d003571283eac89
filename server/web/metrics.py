"""Prometheus metrics of a serving process, and GET /metrics (one scrape covers every --processes worker)."""

import asyncio
import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator

import tornado.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client import (
    multiprocess as prometheus_multiprocess,
)
from prometheus_client.metrics_core import Metric
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Phase
from server.migrations.events import AppliedRevision, MigrationEvents, Status, UpgradeResult
from server.web.handlers import JsonHandler
from server.web.state import ServiceState

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LOOP_LAG_INTERVAL = 1.0  # one wake-up a second: a stalled loop shows within a second, an idle one costs nothing
METHODS = ("GET", "POST")  # what the routes answer; anything else is counted as "other"
# Pre-created for every handler and method, so that rate() and absent() work before the first of each.
CODES = (200, 201, 400, 401, 404, 405, 409, 413, 500, 503)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MIGRATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
_PID_OF_FILE = re.compile(r"_(\d+)\.db$")


def is_multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """For --processes: a private directory the workers' metrics live in, made before forking, removed at exit."""
    path = tempfile.mkdtemp(prefix="server-metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    _choose_value_class()
    try:
        yield path
    finally:
        del os.environ[MULTIPROCESS_DIR]
        _choose_value_class()
        shutil.rmtree(path, ignore_errors=True)


def _choose_value_class() -> None:
    """Make prometheus_client store values in files (or memory again) from now on.

    It chooses once, when first imported, from the environment; we know --processes only after parsing the
    settings, long after that import. tests/web/test_metrics.py fails by name if prometheus_client moves this.
    """
    values.ValueClass = values.get_value_class()


def worker_exited(pid: int) -> None:
    """The supervisor's bookkeeping when a worker is gone: its live gauges leave the sums."""
    if is_multiprocess():
        prometheus_multiprocess.mark_process_dead(pid)


def make_metrics() -> "Metrics | None":
    """This process's metrics (benchmarks/reads.py replaces this with None to measure what they cost)."""
    return Metrics(multiprocess=is_multiprocess())


class Metrics(MigrationEvents):
    """This process's metrics: requests (from the access log hook), readiness, migrations, pool, loop lag."""

    def __init__(self, multiprocess: bool):
        disable_created_metrics()  # a *_created series beside every counter and histogram: noise for a scrape
        # Multiprocess: values go to per-worker files and every scrape merges them, so nothing registers here.
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        register = None if multiprocess else self.registry
        if multiprocess:
            prometheus_multiprocess.MultiProcessCollector(self.registry)
            WorkerProcessCollector(self.registry)
        else:
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "http_requests", "HTTP requests answered.", ["handler", "method", "code"], registry=register
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time from reading a request to finishing its answer.",
            ["handler", "method"],
            buckets=REQUEST_BUCKETS,
            registry=register,
        )
        # livemin: the service is ready when every live worker is.
        self.ready = Gauge(
            "service_ready", "1 once the schema is at head and requests are served.", multiprocess_mode="livemin",
            registry=register,
        )  # fmt: skip
        # livemostrecent: the newest news wins, whichever worker heard it (an admin upgrade runs on one).
        self.revision = Gauge(
            "schema_revision_info", "1 for the revision the database is at.", ["revision"],
            multiprocess_mode="livemostrecent", registry=register,
        )  # fmt: skip
        self.pending = Gauge(
            "migrations_pending", "Revisions not yet applied, when last read.", multiprocess_mode="livemostrecent",
            registry=register,
        )  # fmt: skip
        self.applied = Counter("migrations_applied", "Revisions this service applied.", registry=register)
        self.failed = Counter("migration_failures", "Upgrades that failed (a revision, the lock…).", registry=register)
        self.migration_seconds = Histogram(
            "migration_duration_seconds", "Time each applied revision took.", buckets=MIGRATION_BUCKETS,
            registry=register,
        )  # fmt: skip
        self.lock_wait = Histogram(
            "migration_lock_wait_seconds", "Time waited for the migration lock before migrating.",
            buckets=MIGRATION_BUCKETS, registry=register,
        )  # fmt: skip
        self.pool_in_use = Gauge(
            "db_pool_connections_in_use", "Database connections checked out of the serving pool.",
            multiprocess_mode="livesum", registry=register,
        )  # fmt: skip
        self.loop_lag = Histogram(
            "event_loop_lag_seconds", "How late the event loop woke for a timer.", buckets=LAG_BUCKETS,
            registry=register,
        )  # fmt: skip
        self.ready.set(0)
        self.pending.set(0)
        self._children: dict[tuple[type, str, int], tuple] = {}
        self._revisions: set[str] = set()
        self._lag_timer: asyncio.TimerHandle | None = None

    # --- requests: the access log hook, kept to a dict lookup and two increments --------------------------

    def precreate(self, handlers: Iterable[type[tornado.web.RequestHandler]]) -> None:
        for handler in handlers:
            for method in METHODS:
                if method == "GET" or _implements(handler, method):
                    self.request_seconds.labels(handler.__name__, method)
                    for code in CODES:
                        self._children[handler, method, code] = self._make_children(handler, method, code)

    def observe_request(self, handler: tornado.web.RequestHandler) -> None:
        self.observe(type(handler), handler.request.method, handler.get_status(), handler.request.request_time())

    def observe(self, handler: type[tornado.web.RequestHandler], method: str, code: int, seconds: float) -> None:
        """One request answered, by handler or on its behalf (web/probes.py)."""
        key = (handler, method, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._make_children(*key)
        count, duration = children
        count.inc()
        duration.observe(seconds)

    def _make_children(self, handler: type, method: str, code: int) -> tuple:
        method = method if method in METHODS else "other"
        name = handler.__name__
        return self.requests.labels(name, method, str(code)), self.request_seconds.labels(name, method)

    # --- readiness, pool, event loop -------------------------------------------------------------------

    def watch(self, state: ServiceState, engine: AsyncEngine) -> None:
        """Follow the service's phase and its pool, and start timing the event loop (on the running loop)."""
        state.on_phase = self.phase_changed
        self.phase_changed(state.phase)
        pool = engine.sync_engine.pool
        if self.multiprocess:  # values live in files that the scrape reads: keep them current
            event.listen(pool, "checkout", lambda *_: self.pool_in_use.inc())
            event.listen(pool, "checkin", lambda *_: self.pool_in_use.dec())
        else:  # asked of the pool at scrape time: nothing per request
            self.pool_in_use.set_function(pool.checkedout)
        self._schedule_lag_check(asyncio.get_running_loop())

    def phase_changed(self, phase: Phase) -> None:
        self.ready.set(1 if phase == Phase.READY else 0)

    def _schedule_lag_check(self, loop: asyncio.AbstractEventLoop) -> None:
        expected = loop.time() + LOOP_LAG_INTERVAL

        def check() -> None:
            self.loop_lag.observe(max(loop.time() - expected, 0.0))
            self._schedule_lag_check(loop)

        self._lag_timer = loop.call_at(expected, check)

    def close(self) -> None:
        if self._lag_timer is not None:
            self._lag_timer.cancel()
        self.ready.set(0)

    # --- migrations (MigrationEvents, called on the migrator's thread) ----------------------------------

    def status_read(self, status: Status) -> None:
        self.pending.set(len(status.pending))
        current = set(status.current)
        for revision in self._revisions - current:
            # Set to 0, not removed: in multiprocess mode a removed series keeps its last value in the file.
            self.revision.labels(revision).set(0)
        for revision in current:
            self.revision.labels(revision).set(1)
        self._revisions = current

    def lock_taken(self, waited: float) -> None:
        self.lock_wait.observe(waited)

    def upgraded(self, result: UpgradeResult) -> None:
        self._count_applied(result.applied)
        self.status_read(result.status)

    def upgrade_failed(self, applied: tuple[AppliedRevision, ...]) -> None:
        self._count_applied(applied)
        self.failed.inc()

    def _count_applied(self, applied: tuple[AppliedRevision, ...]) -> None:
        for revision in applied:
            self.applied.inc()
            self.migration_seconds.observe(revision.seconds)

    # --- the scrape --------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _implements(handler: type, method: str) -> bool:
    return getattr(handler, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())


class WorkerProcessCollector:
    """The process collector's metrics for every live worker, labelled by pid (multiprocess mode has none)."""

    def __init__(self, registry: CollectorRegistry):
        self.path = os.environ[MULTIPROCESS_DIR]
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in sorted(self._worker_pids()):
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                merged.samples += [s._replace(labels={**s.labels, "pid": str(pid)}) for s in family.samples]
        return families.values()

    def _worker_pids(self) -> set[int]:
        pids = set()
        for path in glob.glob(os.path.join(self.path, "counter_*.db")):
            match = _PID_OF_FILE.search(path)
            if match and os.path.exists(f"/proc/{match.group(1)}"):
                pids.add(int(match.group(1)))
        return pids


class MetricsHandler(JsonHandler):
    def initialize(self, state: ServiceState, metrics: Metrics):
        super().initialize(state)
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.exposition())
