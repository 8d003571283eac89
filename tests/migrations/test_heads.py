"""The cheap read of the heads agrees with Alembic's own answer, and steps aside where it cannot be sure."""

from alembic.config import Config
from alembic.script import ScriptDirectory

from conftest import is_sqlite, make_settings, query, run_async, sqlite_path, upgrade_in_process
from server.db import make_engine, read_only_url
from server.migrations.heads import current_if_at_head, read_heads
from server.settings import ROOT
from server.transfer.command import at_head as transfer_at_head


def alembic_heads(ini) -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(Config(str(ini))).get_heads())


def test_the_shipped_history_has_the_heads_alembic_finds():
    ini = ROOT / "alembic.ini"
    assert read_heads(str(ini)) == alembic_heads(ini) == {"0002"}


def test_extra_version_locations_and_a_merge_agree_with_alembic(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", "pass")
    add("0004", "0002", "pass")
    assert read_heads(str(ini)) == alembic_heads(ini) == {"0003", "0004"}
    add("0005", ("0003", "0004"), "pass")
    assert read_heads(str(ini)) == alembic_heads(ini) == {"0005"}


def test_branch_labels_or_an_unreadable_file_leave_it_to_alembic(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", "pass")
    versions = next(p for p in ini.parent.iterdir() if p.name == "extra_versions")
    text = (versions / "0003.py").read_text().replace("branch_labels = None", "branch_labels = ('feature',)")
    (versions / "0003.py").write_text(text)
    assert read_heads(str(ini)) is None
    (versions / "0003.py").write_text("revision = compute()\n")
    assert read_heads(str(ini)) is None


def test_a_missing_ini_is_left_to_alembic(tmp_path):
    assert read_heads(str(tmp_path / "nope.ini")) is None


def test_current_if_at_head_agrees_with_the_migrator(database_url):
    settings = make_settings(database_url)

    async def ask(url):
        engine = make_engine(url)
        try:
            return await current_if_at_head(engine, settings.alembic_config)
        finally:
            await engine.dispose()

    def answers():
        # as the server asks, through a read-only URL (an SQLite URI), and as the transfer asks with its
        # own drivers
        return (
            run_async(ask, settings.database_url),
            run_async(ask, read_only_url(settings.database_url)),
            run_async(transfer_at_head, settings),
        )

    if is_sqlite(database_url):
        sqlite_path(database_url).parent.mkdir(parents=True)
        assert answers() == (None, None, None)  # no file yet, and none made
        assert not sqlite_path(database_url).exists()
    assert answers() == (None, None, None)  # empty: no version table yet
    upgrade_in_process(database_url)
    assert answers() == (("0002",), ("0002",), ("0002",))
    query(database_url, "UPDATE alembic_version SET version_num = '0001'")
    assert answers() == (None, None, None)


def test_the_transfer_leaves_an_unreachable_database_to_the_migrator():
    """Nothing listens on port 1: no answer, so None (the migrator then waits and words the error)."""
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    assert run_async(transfer_at_head, settings) is None
