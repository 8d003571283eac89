"""--processes: workers migrate once, serve, stop together, and never outlive a failure or their parent."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import Writers, assert_clean, clean_environ, is_alive, query, wait_for
from server.settings import ROOT


def ready_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"^\S+ \S+ INFO \[(\d+) server\] ready$", log, re.MULTILINE)]


def started_workers(log: str) -> list[int]:
    """The worker pids the --processes parent reports having forked."""
    return [
        int(pid)
        for line in re.findall(r"started \d+ workers: ([\d, ]+)$", log, re.MULTILINE)
        for pid in line.split(", ")
    ]


@contextlib.contextmanager
def killing_leftover_workers(server):
    """However the test ends, no worker outlives it (a parent that failed to stop them would leak them)."""
    try:
        yield
    finally:
        for pid in started_workers(server.log):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("processes", ["2", "0"])
def test_processes_workers_migrate_once_serve_and_stop_together(database_url, processes, start_server):
    workers = int(processes) or os.cpu_count()
    server = start_server(f"--processes={processes}", DATABASE_URL=database_url)
    with killing_leftover_workers(server):
        wait_for(lambda: len(set(ready_pids(server.log))) >= workers, 60, f"{workers} workers ready")

        pids = set(ready_pids(server.log))
        assert len(pids) == workers and pids == set(started_workers(server.log)), server.log
        for _ in range(4):
            status, body, headers = server.get("/")
            assert status == 200 and headers["Content-Type"] == "application/json", body
        log = server.log
        assert log.count("applied revision 0001") == 1 and log.count("applied revision 0002") == 1, log

        assert server.stop(timeout=30) == 0, server.log
        assert not [pid for pid in pids if is_alive(pid)], server.log
        assert_clean(server.log)


def test_processes_2_on_sqlite_take_16_writing_clients_without_an_error(sqlite_url, start_server):
    server = start_server("--processes=2", DATABASE_URL=sqlite_url)
    with killing_leftover_workers(server):
        wait_for(lambda: len(set(ready_pids(server.log))) >= 2, 60, "2 workers ready")

        with Writers(server, clients=16) as writers:
            wait_for(lambda: writers.created >= 400, 60, "400 rows written")

        assert set(writers.statuses) == {201}, writers.statuses
        assert query(sqlite_url, "SELECT count(*) FROM my_table") == [(writers.created,)]
        assert server.stop(timeout=30) == 0, server.log
        assert_clean(server.log)


def stop_via_process_group(workdir, database_url: str, signum: int, workers: int) -> None:
    """Start --processes as the leader of a session of its own, signal the whole group once ready: exit 0."""
    log_path = workdir / f"group-{signal.Signals(signum).name}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "--port=0", f"--processes={workers}"],
            cwd=workdir,
            env=clean_environ(DATABASE_URL=database_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(lambda: len(set(ready_pids(log_path.read_text()))) >= workers, 60, f"{workers} workers ready")
        pids = set(ready_pids(log_path.read_text()))

        os.killpg(process.pid, signum)
        code = process.wait(30)

        log = log_path.read_text()
        assert code == 0, f"{signal.Signals(signum).name} to the group: exit {code}\n{log}"
        assert not [pid for pid in pids if is_alive(pid)], log
        assert_clean(log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_processes_stop_signal_to_the_whole_process_group_exits_0(sqlite_url, tmp_path):
    # Each worker gets the signal twice: from the group, and forwarded by the parent. The second one can
    # land while the worker's event loop is closing, a narrow race: rounds (and more workers than CPUs, so
    # the parent is often late to forward) give it room to show.
    for signum in [signal.SIGTERM] * 24 + [signal.SIGINT] * 6:
        stop_via_process_group(tmp_path, sqlite_url, signum, workers=4)


def test_processes_a_worker_failing_at_startup_stops_the_service_with_exit_1(start_server):
    server = start_server("--processes=2", DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", DB_WAIT="1")

    with killing_leftover_workers(server):
        code = server.wait_exit(timeout=60)
    assert code == 1, server.log
    log = server.log
    assert "Traceback" not in log, log
    started = re.findall(r"started 2 workers: (\d+), (\d+)$", log, re.MULTILINE)
    assert len(started) == 1, log
    workers = {int(pid) for pid in started[0]}
    failures = [int(pid) for pid in re.findall(r" ERROR \[(\d+) server\] database unreachable", log)]
    assert failures, log
    assert set(failures) <= workers and len(failures) == len(set(failures)), log  # each failed at most once
    logged_pids = {int(pid) for pid in re.findall(r"^\S+ \S+ \w+ \[(\d+) ", log, re.MULTILINE)}
    assert logged_pids <= workers | {server.process.pid}, log  # no worker was started again
    assert not [pid for pid in workers if is_alive(pid)], log


def test_processes_workers_die_with_a_sigkilled_parent_and_the_port_can_be_used_again(sqlite_url, start_server):
    server = start_server("--processes=2", DATABASE_URL=sqlite_url)
    with killing_leftover_workers(server):
        wait_for(lambda: len(set(ready_pids(server.log))) >= 2, 60, "2 workers ready")
        port = server.wait_listening()
        workers = set(started_workers(server.log))

        server.process.kill()
        killed = time.monotonic()
        wait_for(lambda: not [pid for pid in workers if is_alive(pid)], 5, "every worker gone")
        print(f"workers gone {time.monotonic() - killed:.2f} s after the parent's SIGKILL")

    again = start_server(f"--port={port}", DATABASE_URL=sqlite_url)
    again.wait_ready()
    assert again.port == port, again.log
    assert again.stop() == 0, again.log
