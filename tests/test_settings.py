"""Settings: flags beat the environment, the environment beats defaults; URLs normalised; bad input named."""

import io
from pathlib import Path

import pytest

from server.settings import (
    ENVIRONMENT_VARIABLES,
    ROOT,
    SETTINGS,
    SettingsError,
    load_settings,
    make_option_parser,
    markdown_table,
    normalize_database_url,
)


def test_defaults_are_the_embedded_sqlite_file_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings([], environ={})
    assert settings.database_url.drivername == "sqlite+aiosqlite"
    assert settings.database_url.database == str(tmp_path / "var" / "app.db")
    assert (settings.address, settings.port, settings.processes, settings.migrate) == ("127.0.0.1", 8888, 1, "auto")
    assert (settings.migration_lock_timeout, settings.db_wait, settings.admin_token) == (60.0, 30.0, None)
    assert not (tmp_path / "var").exists()  # reading settings creates nothing


def test_environment_beats_default_and_flag_beats_environment():
    environ = {"PORT": "9000", "MIGRATE": "off", "DB_WAIT": "2.5", "PROCESSES": "0", "ADDRESS": "0.0.0.0"}
    settings = load_settings(["--port=9001", "--migrate=check"], environ=environ)
    assert (settings.port, settings.migrate) == (9001, "check")
    assert (settings.db_wait, settings.processes, settings.address) == (2.5, 0, "0.0.0.0")


def test_a_value_may_follow_its_flag_after_a_space():
    settings = load_settings(["--port", "9001", "--migrate", "off", "--db-wait=3"], environ={})
    assert (settings.port, settings.migrate, settings.db_wait) == (9001, "off", 3)


def test_empty_environment_variable_means_unset():
    assert load_settings([], environ={"PORT": "", "ADMIN_TOKEN": ""}).port == 8888


def test_every_flag_has_its_environment_variable():
    environ = {
        "ADDRESS": "::1",
        "PORT": "1",
        "DATABASE_URL": "postgres://u@h/d",
        "PROCESSES": "3",
        "MIGRATE": "only",
        "MIGRATION_LOCK_TIMEOUT": "7",
        "DB_WAIT": "8",
        "DDL_LOCK_TIMEOUT": "9",
        "ADMIN_TOKEN": "t0ken",
        "ALEMBIC_CONFIG": "/elsewhere/alembic.ini",
    }
    settings = load_settings([], environ=environ)
    assert (settings.address, settings.port, settings.processes, settings.migrate) == ("::1", 1, 3, "only")
    assert (settings.migration_lock_timeout, settings.db_wait, settings.ddl_lock_timeout) == (7, 8, 9)
    assert settings.database_url.render_as_string() == "postgresql+asyncpg://u@h/d"
    assert (settings.admin_token, settings.alembic_config) == ("t0ken", "/elsewhere/alembic.ini")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5433/d", "postgresql+asyncpg://u:p@h:5433/d"),
        ("postgres://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
        ("postgresql+asyncpg://u@h/d?ssl=require", "postgresql+asyncpg://u@h/d?ssl=require"),
        ("sqlite:////tmp/x/app.db", "sqlite+aiosqlite:////tmp/x/app.db"),
        ("sqlite+aiosqlite:////tmp/x/app.db", "sqlite+aiosqlite:////tmp/x/app.db"),
    ],
)
def test_url_forms_are_normalised_to_the_async_drivers(given, expected):
    assert normalize_database_url(given).render_as_string(hide_password=False) == expected


def test_relative_sqlite_path_is_made_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_database_url("sqlite:///data/app.db").database == str(tmp_path / "data" / "app.db")


def test_password_is_masked_wherever_settings_are_printed():
    settings = load_settings(["--database-url=postgresql://u:hunter2@h/d", "--admin-token=s3cret"], environ={})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.database_url)
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "environ", "words"),
    [
        (["--port=abc"], {}, "--port"),
        ([], {"PORT": "abc"}, "PORT"),
        (["--port=70000"], {}, "--port"),
        (["--processes=-1"], {}, "--processes"),
        (["--migrate=sometimes"], {}, "--migrate"),
        ([], {"MIGRATE": "sometimes"}, "--migrate"),
        (["--db-wait=-1"], {}, "--db-wait"),
        (["--migration-lock-timeout=nan"], {}, "--migration-lock-timeout"),
        (["--nope=1"], {}, "--nope"),
        (["positional"], {}, "positional"),
        (["--port"], {}, "--port"),
        (["--database-url=mysql://u@h/d"], {}, "mysql"),
        (["--database-url=sqlite://"], {}, "SQLite"),
        (["--database-url=sqlite:///:memory:"], {}, "SQLite"),
        (["--database-url=not a url"], {}, "--database-url"),
    ],
)
def test_bad_settings_are_named(argv, environ, words):
    with pytest.raises(SettingsError) as error:
        load_settings(argv, environ=environ)
    assert words in str(error.value)


def test_bad_url_error_does_not_echo_the_password():
    with pytest.raises(SettingsError) as error:
        load_settings(["--database-url=mysql://u:hunter2@h/d"], environ={})
    assert "hunter2" not in str(error.value)


def test_alembic_config_path_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(["--alembic-config=conf/alembic.ini"], environ={}).alembic_config == str(
        Path(tmp_path / "conf" / "alembic.ini")
    )


def test_the_readme_table_is_the_one_the_settings_declare():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_every_declared_setting_is_a_field_and_a_flag_with_its_variable():
    settings = load_settings([], environ={})
    printed = io.StringIO()
    make_option_parser().print_help(printed)
    help_text = " ".join(printed.getvalue().split())  # --help wraps its lines
    for setting in SETTINGS:
        assert hasattr(settings, setting.field), setting
        assert f"--{setting.flag} " in help_text and f"[{setting.env}]" in help_text, setting
    assert set(ENVIRONMENT_VARIABLES) == {s.env for s in SETTINGS}
