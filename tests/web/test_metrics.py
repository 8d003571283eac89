"""GET /metrics against real server processes: parsed with prometheus_client's own parser."""

import re

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from conftest import upgrade_in_process, wait_for

ADMIN_TOKEN = "metrics-test-token"


def scrape(server) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape: (name, labels) -> value."""
    status, body, headers = server.get("/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain"), dict(headers)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape_until(server, name: str, expected: float, timeout: float = 10) -> dict:
    """The first scrape in which name reads expected."""
    samples: dict = {}

    def reads_expected() -> bool:
        samples.update(scrape(server))
        return value(samples, name) == expected

    wait_for(reads_expected, timeout, f"{name} == {expected}")
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: dict, name: str, **labels) -> float:
    """The sum over every series of name whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= series)


def test_prometheus_client_still_chooses_its_value_class_where_multiprocess_dir_expects_it():
    # server/web/metrics.py re-chooses after setting PROMETHEUS_MULTIPROC_DIR: this fails loudly if that moves.
    assert callable(values.get_value_class)
    assert values.ValueClass is values.get_value_class()


def test_a_scrape_parses_and_counts_each_request_by_handler_method_and_code(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready()
    before = scrape(server)
    # Pre-created: a series that has not happened yet is there, at 0.
    assert value(before, "http_requests_total", handler="RowsHandler", method="POST", code="201") == 0
    assert value(before, "http_requests_total", handler="LiveHandler", method="GET", code="200") == 0
    for _ in range(7):
        assert server.get("/health/live")[0] == 200
    for _ in range(3):
        assert server.get("/no/such/path")[0] == 404
    after = scrape(server)

    assert value(after, "http_requests_total", handler="LiveHandler", method="GET", code="200") == 7
    assert value(after, "http_requests_total", handler="NotFoundHandler", method="GET", code="404") == 3
    assert value(after, "http_request_duration_seconds_count", handler="LiveHandler", method="GET") == 7
    # The scrape before this one was counted too, under its handler's name; never a raw path as a label.
    assert value(after, "http_requests_total", handler="MetricsHandler", method="GET", code="200") >= 1
    assert not any("/" in v for (_, series) in after for _, v in series if _ != "le")
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "event_loop_lag_seconds_count"):
        assert value(after, name) is not None, name
    assert value(after, "db_pool_connections_in_use") == 0
    assert server.stop() == 0, server.log


def test_after_a_start_that_applied_two_revisions(start_server, database_url):
    server = start_server(DATABASE_URL=database_url)
    server.wait_ready()
    samples = scrape(server)
    assert value(samples, "migrations_applied_total") == 2
    assert value(samples, "migration_duration_seconds_count") == 2
    assert value(samples, "migrations_pending") == 0
    assert value(samples, "schema_revision_info", revision="0002") == 1
    assert value(samples, "service_ready") == 1
    assert value(samples, "migration_lock_wait_seconds_count") == 1
    assert value(samples, "migration_failures_total") == 0
    assert server.stop() == 0, server.log


def test_service_ready_is_0_while_a_slow_revision_runs_then_1(start_server, extra_revisions, sqlite_url):
    ini, add = extra_revisions
    add("0003", "0002", "time.sleep(3)")
    server = start_server(DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini))
    server.wait_listening()
    # Read before the lock: three revisions pending on a fresh database, and not ready.
    migrating = scrape_until(server, "migrations_pending", 3)
    assert value(migrating, "service_ready") == 0
    assert server.get("/health/ready")[0] == 503  # still migrating, so the scrape above was taken while it was
    server.wait_ready()
    ready = scrape(server)
    assert value(ready, "service_ready") == 1
    assert value(ready, "migrations_pending") == 0
    assert value(ready, "migrations_applied_total") == 3
    assert value(ready, "schema_revision_info", revision="0003") == 1
    assert value(ready, "migration_duration_seconds_sum") >= 3
    assert server.stop() == 0, server.log


def test_an_admin_upgrade_is_counted_and_moves_the_revision(start_server, extra_revisions, sqlite_url):
    ini, add = extra_revisions
    upgrade_in_process(sqlite_url)  # at 0002; the server's history has 0003 beyond it
    add("0003", "0002", "op.create_table('extra', sa.Column('id', sa.Integer, primary_key=True))")
    server = start_server("--migrate=off", DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini), ADMIN_TOKEN=ADMIN_TOKEN)
    server.wait_listening()
    waiting = scrape_until(server, "migrations_pending", 1)
    assert value(waiting, "schema_revision_info", revision="0002") == 1
    assert value(waiting, "service_ready") == 0

    status, body, _ = server.request(
        "POST", "/admin/migrations/upgrade", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    assert status == 200, body
    server.wait_ready()
    samples = scrape(server)
    assert value(samples, "migrations_applied_total") == 1
    assert value(samples, "migrations_pending") == 0
    assert value(samples, "schema_revision_info", revision="0003") == 1
    assert value(samples, "schema_revision_info", revision="0002") == 0  # left: 0, so only one series reads 1
    assert value(samples, "service_ready") == 1
    assert server.stop() == 0, server.log


def test_with_two_processes_one_scrape_counts_the_requests_of_both_workers(start_server, sqlite_url, tmp_path):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    server = start_server("--processes=2", DATABASE_URL=sqlite_url, TMPDIR=str(private_tmp))
    server.wait_ready()
    wait_for(lambda: server.log.count("] ready") >= 2, 30, "both workers ready")
    metrics_dirs = list(private_tmp.glob("server-metrics-*"))
    assert len(metrics_dirs) == 1, metrics_dirs

    # 404s are logged with the worker's pid: keep asking (a new connection each) until both have answered.
    sent = 0
    while sent < 400 and len(set(re.findall(r"\[(\d+) tornado\.access\] 404", server.log))) < 2:
        assert server.get("/no/such/path")[0] == 404
        sent += 1
    served_by = set(re.findall(r"\[(\d+) tornado\.access\] 404", server.log))
    assert len(served_by) == 2, f"one worker answered all {sent} requests:\n{server.log}"

    samples = scrape(server)
    assert value(samples, "http_requests_total", handler="NotFoundHandler", method="GET", code="404") == sent
    assert value(samples, "service_ready") == 1  # every live worker is ready
    assert value(samples, "migrations_applied_total") == 2  # one worker migrated; the other found it done
    assert value(samples, "migration_lock_wait_seconds_count") in (1, 2)
    assert {dict(series)["pid"] for (name, series) in samples if name == "process_cpu_seconds_total"} == served_by
    assert server.stop() == 0, server.log
    assert not list(private_tmp.iterdir()), "the metrics directory outlived the server"


# --- X-Request-ID --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, status", [("/health/live", 200), ("/no/such/path", 404)])
def test_a_request_id_is_returned_as_given_or_generated(start_server, sqlite_url, path, status):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready()
    given = "req-42/abc:XYZ"
    answer = server.request("GET", path, headers={"X-Request-ID": given})
    assert answer[0] == status and answer[2]["X-Request-ID"] == given
    generated = {server.get(path)[2]["X-Request-ID"] for _ in range(2)}
    refused = {
        server.request("GET", path, headers={"X-Request-ID": bad})[2]["X-Request-ID"] for bad in ("a b", "x" * 129)
    }
    for request_id in generated | refused:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    assert len(generated | refused) == 4
    assert server.stop() == 0, server.log


def test_the_request_id_is_on_the_requests_log_line(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready()
    assert server.request("GET", "/?limit=0", headers={"X-Request-ID": "trace-7f3a"})[0] == 400
    _, _, headers = server.get("/?limit=x")
    generated = headers["X-Request-ID"]
    assert server.stop() == 0, server.log
    lines = [line for line in server.log.splitlines() if "tornado.access" in line]
    assert any("/?limit=0" in line and line.endswith("[request trace-7f3a]") for line in lines), server.log
    assert any(f"[request {generated}]" in line and "/?limit=x" in line for line in lines), server.log
    # The ID stays with its request: no line logged outside one carries it.
    assert not [line for line in server.log.splitlines() if "[request " in line and "tornado.access" not in line]
