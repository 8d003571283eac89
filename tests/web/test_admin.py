"""/admin/migrations: status and the HTTP-triggered upgrade, behind the bearer token."""

import logging

import orjson
import pytest
from sqlalchemy import text

from conftest import column_names, in_thread, make_settings, migration_lock_held, run_async, versions
from server.db import make_engine, make_session_factory
from server.errors import Phase
from server.migrations import Migrator
from server.migrations.runner import MigrationRunner
from server.settings import normalize_database_url
from server.web.app import make_app
from server.web.state import ServiceState

TOKEN = "t0ken-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_token():
    return TOKEN


@pytest.fixture
def alembic_flags(request):
    """Tests that use failing_revision or dangerous_revision get a runner whose history ends in it."""
    for extra in ("failing_revision", "dangerous_revision"):
        if extra in request.fixturenames:
            return (f"--alembic-config={request.getfixturevalue(extra)}",)
    return ()


@pytest.fixture
def runner(database_url, alembic_flags, state):
    settings = make_settings(database_url, "--migration-lock-timeout=1", *alembic_flags)
    runner = MigrationRunner(settings, lambda: state.phase, state.set_phase)
    yield runner
    runner.close()


@pytest.fixture
def state():
    return ServiceState(Phase.WAITING)  # as under --migrate=off with the database behind


def test_waiting_for_the_lock_is_reported_as_migrating(database_url, state, runner):
    phases = []
    runner.migrator.on_phase = lambda phase: (phases.append(phase), runner._on_phase(phase))
    in_thread(runner.migrator.upgrade)
    assert phases == ["migrating"]


@pytest.fixture
def app(io_loop, database_url, state, runner, admin_token):
    engine = make_engine(normalize_database_url(database_url))
    yield make_app(make_session_factory(engine, make_settings(database_url)), state, runner, admin_token)
    io_loop.run_sync(engine.dispose)


async def call(http_client, base_url, method, path, headers=AUTH):
    response = await http_client.fetch(
        base_url + path, method=method, headers=headers, body=b"" if method == "POST" else None, raise_error=False
    )
    assert response.headers["Content-Type"] == "application/json"
    return response.code, orjson.loads(response.body), response.headers


@pytest.mark.parametrize("admin_token", [None])
@pytest.mark.gen_test
async def test_without_a_configured_token_admin_answers_404(http_client, base_url):
    for method, path in (("GET", "/admin/migrations"), ("POST", "/admin/migrations/upgrade")):
        code, body, _ = await call(http_client, base_url, method, path)
        assert (code, body) == (404, {"error": "not found"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "basic", "no-scheme", "prefix", "longer", "empty"],
)
@pytest.mark.gen_test
async def test_missing_or_wrong_token_is_401(http_client, base_url, headers, runner):
    for method, path in (("GET", "/admin/migrations"), ("POST", "/admin/migrations/upgrade")):
        code, body, response_headers = await call(http_client, base_url, method, path, headers)
        assert code == 401 and "token" in body["error"]
        assert response_headers["WWW-Authenticate"] == "Bearer"
    assert runner.last_upgrade is None  # nothing ran


@pytest.mark.gen_test
async def test_status_then_upgrade_then_status(http_client, base_url, state):
    code, body, _ = await call(http_client, base_url, "GET", "/admin/migrations")
    assert code == 200
    assert body["current"] == [] and body["heads"] == ["0002"]
    assert [p["id"] for p in body["pending"]] == ["0001", "0002"]
    assert body["pending"][0]["message"] == "create my_table"
    assert (body["state"], body["running"], body["last_upgrade"]) == ("waiting", False, None)

    code, body, _ = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert code == 200
    assert [a["id"] for a in body["applied"]] == ["0001", "0002"] and body["current"] == ["0002"]
    assert state.phase == "ready"

    code, body, _ = await call(http_client, base_url, "GET", "/admin/migrations")
    assert (code, body["current"], body["pending"], body["state"]) == (200, ["0002"], [], "ready")
    assert [a["id"] for a in body["last_upgrade"]["applied"]] == ["0001", "0002"]
    assert body["last_upgrade"]["error"] is None and body["last_upgrade"]["seconds"] >= 0

    code, body, _ = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert (code, body["applied"], body["current"]) == (200, [], ["0002"])


@pytest.mark.gen_test(timeout=30)
async def test_upgrade_while_another_migrator_holds_the_lock_is_503(http_client, base_url, database_url, state):
    with migration_lock_held(database_url):
        code, body, headers = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
        assert code == 503 and "lock" in body["error"] and "Retry-After" in headers
        assert state.phase == Phase.WAITING  # back to what it was: nothing changed
    code, body, _ = await call(http_client, base_url, "GET", "/admin/migrations")
    assert "lock" in body["last_upgrade"]["error"] and body["current"] == []


@pytest.fixture
def failing_revision(extra_revisions):
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        'op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))\n'
        'raise RuntimeError("boom in 0003")',
    )
    return ini


@pytest.mark.gen_test(timeout=30)
async def test_failing_revision_is_500_and_the_server_keeps_serving(
    http_client, base_url, failing_revision, runner, state
):
    code, body, _ = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert code == 500 and "0003" in body["error"] and "boom in 0003" in body["error"]
    assert state.phase == "failed"
    live = await http_client.fetch(base_url + "/health/live")
    assert live.code == 200
    ready = await http_client.fetch(base_url + "/health/ready", raise_error=False)
    assert (ready.code, orjson.loads(ready.body)["status"]) == (503, "failed")
    code, body, _ = await call(http_client, base_url, "GET", "/admin/migrations")
    assert body["current"] == ["0002"] and [p["id"] for p in body["pending"]] == ["0003"]
    assert [a["id"] for a in body["last_upgrade"]["applied"]] == ["0001", "0002"]
    assert "0003" in body["last_upgrade"]["error"]


@pytest.fixture
def dangerous_revision(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", 'op.drop_column("my_table", "created_at")')
    return ini


@pytest.mark.gen_test(timeout=30)
async def test_a_revision_the_lint_refuses_is_409_with_the_findings_and_nothing_runs(
    http_client, base_url, dangerous_revision, ready_at_0002, state, database_url
):
    code, body, _ = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert code == 409 and "ban-drop-column" in body["error"] and "0003" in body["error"]
    finding = next(f for f in body["findings"] if f["rule"] == "ban-drop-column")
    assert (finding["revision"], finding["level"], finding["accepted"]) == ("0003", "error", None)
    assert state.phase == Phase.READY  # a serving server goes on serving
    assert versions(database_url) == ["0002"] and "created_at" in column_names(database_url, "my_table")


@pytest.fixture
def ready_at_0002(database_url, state):
    in_thread(Migrator(make_settings(database_url)).upgrade)  # our head, without the failing extra
    state.set_phase(Phase.READY)


@pytest.mark.gen_test(timeout=30)
async def test_failing_revision_leaves_a_serving_server_serving(
    http_client, base_url, failing_revision, ready_at_0002, state
):
    code, body, _ = await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert code == 500 and "0003" in body["error"]
    assert state.phase == "ready"
    rows = await http_client.fetch(base_url + "/")
    assert rows.code == 200 and orjson.loads(rows.body) == {"items": [], "next": None}


@pytest.mark.gen_test
async def test_unknown_revision_in_the_database_is_409(http_client, base_url, database_url):
    in_thread(Migrator(make_settings(database_url)).upgrade)
    settings = make_settings(database_url)
    engine = make_engine(settings.database_url)

    async def corrupt():
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
        await engine.dispose()

    run_async(corrupt)
    for method, path in (("GET", "/admin/migrations"), ("POST", "/admin/migrations/upgrade")):
        code, body, _ = await call(http_client, base_url, method, path)
        assert code == 409 and "zzzz" in body["error"]


@pytest.mark.gen_test
async def test_the_token_never_reaches_the_log(http_client, base_url, caplog):
    caplog.set_level(logging.DEBUG)
    await call(http_client, base_url, "GET", "/admin/migrations", {"Authorization": "Bearer wrong-guess"})
    await call(http_client, base_url, "POST", "/admin/migrations/upgrade")
    assert caplog.records and TOKEN not in caplog.text and "wrong-guess" not in caplog.text
