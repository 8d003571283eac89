"""--processes: forked workers sharing the listening sockets, stopped together, never restarted in a loop.

Tornado's fork_processes restarts crashed workers and leaves them running when the parent is signalled,
so the parent here forwards SIGTERM/SIGINT to every worker and stops them all when one fails.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger("server")


def run_workers(count: int, worker: Callable[[int], int], on_exit: Callable[[int], None] = lambda pid: None) -> int:
    """Fork count workers, each running worker(index) and exiting with its result; return 0 if all did.
    on_exit(pid) is called as each one is reaped."""
    children: dict[int, int] = {}
    stopping = False

    def stop_all(signum=signal.SIGTERM, _frame=None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # Installed before forking, so no signal falls between a fork and its handler.
    previous = {signum: signal.signal(signum, stop_all) for signum in (signal.SIGTERM, signal.SIGINT)}
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            for signum in previous:
                signal.signal(signum, signal.SIG_DFL)  # the worker's event loop installs its own
            code = 1
            try:
                code = worker(index)
            except BaseException:
                log.exception("worker %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index
    log.info("started %d workers: %s", count, ", ".join(map(str, children)))

    exit_code = 0
    while children:
        pid, status = os.wait()  # retried after our signal handler runs (PEP 475)
        index = children.pop(pid, None)
        if index is None:
            continue
        on_exit(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            exit_code = 1
            if stopping:
                log.error("worker %d (pid %d) exited with status %d while stopping", index, pid, code)
            else:
                log.error("worker %d (pid %d) exited with status %d; stopping the others", index, pid, code)
                stop_all()
        elif not stopping:
            stop_all()  # a worker that leaves on its own takes the service down with it
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    return exit_code
