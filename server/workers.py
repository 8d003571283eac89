"""--processes: forked workers sharing the listening sockets, stopped together, never restarted in a loop.

Tornado's fork_processes restarts crashed workers and leaves them running when the parent is signalled,
so the parent here forwards SIGTERM/SIGINT to every worker and stops them all when one fails. A worker
whose parent dies (even by SIGKILL) gets SIGTERM from the kernel and stops as it would on a signal.
"""

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("server")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_CHECK_INTERVAL = 1.0


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
    parent = os.getpid()
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            die_with_parent(parent)
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


def die_with_parent(parent: int) -> None:
    """In a forked worker: be sent SIGTERM when the parent dies, by the kernel where it can, else by a watcher."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's prctl among them
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    # The watcher covers other systems, a failed prctl, and a parent that died before prctl ran.
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    stopped = threading.Event()
    while os.getppid() == parent:
        stopped.wait(PARENT_CHECK_INTERVAL)
    log.warning("the --processes parent (pid %d) is gone; stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)
