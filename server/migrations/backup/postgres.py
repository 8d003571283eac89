"""PostgreSQL snapshots with pg_dump --format=custom, restored with pg_restore in one transaction."""

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL

from server.errors import BackupFailed
from server.migrations.status import VERSION_TABLE

TOOLS_PACKAGE = "postgresql-client"


def take(url: URL, target: Path) -> None:
    """pg_dump of the whole database into target; rows are not counted (the dump's own check is pg_restore's)."""
    _run("pg_dump", "--format=custom", "--no-password", f"--file={target}", url=url)


def check(path: Path) -> str | None:
    """The revision a dump holds (None without alembic_version); BackupFailed when pg_restore cannot read it."""
    _run("pg_restore", "--list", str(path))
    script = _run("pg_restore", "--data-only", f"--table={VERSION_TABLE}", "--file=-", str(path))
    revisions, copying = [], False
    for line in script.splitlines():
        if line.startswith(f"COPY public.{VERSION_TABLE} "):
            copying = True
        elif copying and line == "\\.":
            copying = False
        elif copying:
            revisions.append(line.strip())
    return "+".join(sorted(revisions)) or None


def restore(url: URL, dump: Path) -> None:
    """pg_restore --clean in one transaction: all of the dump, or nothing."""
    _run(
        "pg_restore",
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--no-owner",
        "--no-password",
        "--exit-on-error",
        str(dump),
        url=url,
    )


def _run(tool: str, *args: str, url: URL | None = None) -> str:
    """The tool's output; BackupFailed with its first error line, never the password."""
    if shutil.which(tool) is None:
        raise BackupFailed(f"{tool} is not on PATH (install {TOOLS_PACKAGE})")
    env = dict(os.environ)
    command = [tool, *args]
    if url is not None:
        # The password goes through the environment: a command line is visible to every user of the host.
        if url.password:
            env["PGPASSWORD"] = url.password
        target = url.set(drivername="postgresql", password=None, query={})
        command.append(f"--dbname={target.render_as_string(hide_password=False)}")
    done = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no message")
        if url is not None and url.password:
            reason = reason.replace(url.password, "***")
        raise BackupFailed(f"{tool} exited {done.returncode}: {reason.strip()}")
    return done.stdout
