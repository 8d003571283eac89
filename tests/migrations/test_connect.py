"""Connecting for migrating: what waiting cannot mend fails at once, naming what is missing."""

import time

import pytest
from sqlalchemy.engine import make_url

from conftest import assert_one_clear_error

DB_WAIT = "30"


@pytest.mark.parametrize(
    ("part", "value", "words"),
    [
        ("username", "no_such_role_12", ("the role is not allowed to connect", '"no_such_role_12" does not exist')),
        ("database", "no_such_database_12", ("the database does not exist", '"no_such_database_12" does not exist')),
    ],
)
def test_a_missing_role_or_database_fails_at_once_naming_it(start_server, postgres_url, part, value, words):
    url = make_url(postgres_url).set(**{part: value}).render_as_string(hide_password=False)
    started = time.monotonic()
    server = start_server(DATABASE_URL=url, DB_WAIT=DB_WAIT)
    assert server.wait_exit(20) == 1, server.log
    assert time.monotonic() - started < 10, server.log  # far inside --db-wait: not retried
    line = assert_one_clear_error(server, "database refused the connection", *words)
    assert "did not answer" not in line and "retrying" not in server.log, server.log
