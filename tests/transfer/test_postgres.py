"""PostgreSQL as a source: what it can hold that no other side can take is refused in one line."""

import pytest

from conftest import assert_one_clear_error, make_source, pg_execute, stored_rows, transfer


@pytest.mark.postgres
@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_an_infinite_timestamp_in_the_source_stops_with_one_line_and_nothing_written(
    postgres_url, sqlite_url, new_postgres_url, target
):
    """Into SQLite it has no text; into PostgreSQL the checksum has no number for it (within years 1 to 9999,
    as the README says)."""
    make_source(postgres_url)
    pg_execute(postgres_url, "INSERT INTO my_table (id, name, created_at) VALUES (1, 'a', 'infinity')")
    target_url = sqlite_url if target == "sqlite" else new_postgres_url()

    result = transfer(postgres_url, target_url)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "source", "infinit")  # "infinity", "infinite timestamps"
    assert stored_rows(target_url) == []
