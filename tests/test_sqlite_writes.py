"""SQLite under write load: a revision applied by hand or by the admin endpoint while clients write."""

import json

from conftest import Writers, assert_clean, query, run_alembic, sqlite_path, versions

ADD_NOTE = 'op.add_column("my_table", sa.Column("note", sa.String(20), nullable=True))'
TOKEN = "write-load-token"


def assert_every_write_answered_and_stored(writers: Writers, url: str) -> None:
    assert set(writers.statuses) == {201}, writers.statuses  # no 500, no 503, no reset
    assert writers.created >= 8, writers.statuses
    assert query(url, "SELECT count(*) FROM my_table") == [(writers.created,)]


def test_the_serving_database_runs_in_wal_mode(sqlite_url, start_server):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready()

    assert query(sqlite_url, "PRAGMA journal_mode") == [("wal",)]
    assert server.stop() == 0, server.log


def test_alembic_upgrade_by_hand_while_8_clients_write(sqlite_url, extra_revisions, start_server, tmp_path):
    ini, add = extra_revisions
    server = start_server(DATABASE_URL=sqlite_url)  # the shipped revisions: at head once ready
    server.wait_ready()
    add("0003", "0002", ADD_NOTE, 'op.drop_column("my_table", "note")')

    with Writers(server, clients=8) as writers:
        manual = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini))

    assert manual.returncode == 0, manual.stderr
    assert versions(sqlite_url) == ["0003"]
    assert_every_write_answered_and_stored(writers, sqlite_url)
    assert_clean(server.log)
    assert server.stop() == 0, server.log


def test_the_admin_upgrade_while_8_clients_write(sqlite_url, extra_revisions, start_server, tmp_path):
    ini, add = extra_revisions
    serving = start_server(DATABASE_URL=sqlite_url)
    serving.wait_ready()
    add("0003", "0002", ADD_NOTE, 'op.drop_column("my_table", "note")')
    # A second server that knows 0003 and waits for it: its admin endpoint applies it.
    admin = start_server(
        "--migrate=off",
        f"--admin-token={TOKEN}",
        cwd=tmp_path / "admin",
        DATABASE_URL=sqlite_url,
        ALEMBIC_CONFIG=str(ini),
    )
    admin.wait_listening()

    with Writers(serving, clients=8) as writers:
        status, body, _ = admin.request(
            "POST", "/admin/migrations/upgrade", b"", {"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )

    assert status == 200, body
    assert [revision["id"] for revision in json.loads(body)["applied"]] == ["0003"]
    assert versions(sqlite_url) == ["0003"]
    assert_every_write_answered_and_stored(writers, sqlite_url)
    admin.wait_ready()
    for server in (serving, admin):
        assert_clean(server.log)
        assert server.stop() == 0, server.log
    assert sqlite_path(sqlite_url).exists()
