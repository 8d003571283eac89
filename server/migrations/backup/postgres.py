"""PostgreSQL snapshots with pg_dump --format=custom, restored with pg_restore's script through psql in one
transaction."""

import os
import re
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


# What `pg_restore --list` names in schema public: "<id>; <table oid> <oid> <KIND> public <name> <owner>".
_LISTED = re.compile(r"^\d+; \d+ \d+ (TABLE|VIEW|MATERIALIZED VIEW|SEQUENCE|TYPE) public (\S+) ", re.MULTILINE)
# Tables, views, sequences and enum types of schema public that the dump does not hold: a later revision made
# them, and `pg_restore --clean` drops only what the dump holds. :'keep' is psql's quoted variable.
_DROP_THE_REST = """
SELECT format('DROP %s IF EXISTS public.%I CASCADE', kind, name) FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
         ELSE 'TABLE' END AS kind, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  UNION ALL
  SELECT 'TYPE', t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = 'public' AND t.typtype = 'e'
) AS objects WHERE NOT name = ANY (string_to_array(:'keep', ' '))
\\gexec
"""


def restore(url: URL, dump: Path) -> None:
    """The database's schema public made the dump's, in one transaction: what the dump holds is restored
    (pg_restore --clean), what it does not hold is dropped. All of it, or nothing."""
    keep = " ".join(name for _, name in _LISTED.findall(_run("pg_restore", "--list", str(dump))))
    script = _run("pg_restore", "--clean", "--if-exists", "--no-owner", "--file=-", str(dump))
    _run(
        "psql",
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--set=ON_ERROR_STOP=1",
        f"--set=keep={keep}",
        url=url,
        stdin=_DROP_THE_REST + script,
    )


def _run(tool: str, *args: str, url: URL | None = None, stdin: str | None = None) -> str:
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
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no message")
        if url is not None and url.password:
            reason = reason.replace(url.password, "***")
        raise BackupFailed(f"{tool} exited {done.returncode}: {reason.strip()}")
    return done.stdout
