"""The SQLite migration lock file, as a server process meets it: never followed through a symlink."""

from conftest import assert_one_clear_error


def test_a_symlinked_lock_file_is_never_followed_and_the_start_fails_with_one_line(start_server, tmp_path):
    database = tmp_path / "var" / "app.db"
    database.parent.mkdir()
    target = tmp_path / "precious.txt"
    target.write_bytes(b"not a lock file\n")
    lock_file = database.parent / "app.db.migration-lock"
    lock_file.symlink_to(target)

    server = start_server(DATABASE_URL=f"sqlite:///{database}")
    assert server.wait_exit(30) == 1, server.log

    assert target.read_bytes() == b"not a lock file\n"
    assert lock_file.is_symlink()
    line = assert_one_clear_error(server, str(lock_file), "symlink", "refusing to follow it")
    assert "remove it" in line
