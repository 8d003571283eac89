"""The heads of the revision files, read without Alembic: most starts only need to know they are at head.

Alembic's ScriptDirectory imports every revision module (and Alembic's runtime with it); here each file's
`revision` and `down_revision` are read with a regular expression. Anything this cannot read for sure
(branch labels, depends_on, an unusual file) answers None, and the caller asks Alembic.
"""

from __future__ import annotations

import ast
import configparser
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.db import sqlite_file

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

VERSION_TABLE = "alembic_version"  # where a database records its revision, as Alembic names it by default
SELECT_VERSIONS = f"SELECT version_num FROM {VERSION_TABLE}"  # the revisions it is at (several: branches)

SELECT_CURRENT = text(SELECT_VERSIONS)  # the same, for a SQLAlchemy connection
_ASSIGNMENT = re.compile(
    r"^(revision|down_revision|branch_labels|depends_on)\s*(?::[^=\n]+)?=\s*(.+?)\s*(?:#.*)?$", re.MULTILINE
)


def version_directories(alembic_ini: str) -> list[Path] | None:
    """The directories alembic.ini keeps revisions in, or None if it says something this cannot follow."""
    parser = configparser.ConfigParser(defaults={"here": str(Path(alembic_ini).resolve().parent)})
    if not parser.read(alembic_ini) or not parser.has_section("alembic"):
        return None
    section = parser["alembic"]
    location = section.get("script_location")
    if not location or ":" in location:  # a package resource ("pkg:path"): Alembic's to resolve
        return None
    locations = section.get("version_locations")
    if not locations:
        return [Path(location) / "versions"]
    separator = {"os": ":", "space": " ", "newline": "\n", ",": ","}.get(section.get("path_separator", "os"))
    if separator is None:
        return None
    return [Path(part) for part in locations.split(separator) if part.strip()]


def read_heads(alembic_ini: str) -> frozenset[str] | None:
    """The head revisions of the history alembic.ini points at, or None when only Alembic can tell."""
    directories = version_directories(alembic_ini)
    if directories is None:
        return None
    revisions: set[str] = set()
    parents: set[str] = set()
    for directory in directories:
        if not directory.is_dir():
            return None
        for path in directory.glob("*.py"):
            found = dict(_ASSIGNMENT.findall(path.read_text(encoding="utf-8", errors="replace")))
            if "revision" not in found:
                if path.name == "__init__.py":
                    continue
                return None
            try:
                revision = ast.literal_eval(found["revision"])
                down = ast.literal_eval(found.get("down_revision", "None"))
                extras = [ast.literal_eval(found.get(name, "None")) for name in ("branch_labels", "depends_on")]
            except (ValueError, SyntaxError):
                return None
            if not isinstance(revision, str) or any(extras) or revision in revisions:
                return None
            revisions.add(revision)
            parents.update((down,) if isinstance(down, str) else down or ())
    if not revisions or not parents <= revisions:
        return None
    return frozenset(revisions - parents)


async def current_if_at_head(engine: AsyncEngine, alembic_ini: str) -> tuple[str, ...] | None:
    """The database's revisions when they are exactly the heads of the files; None when anything differs,
    cannot be read cheaply, or the database does not answer (the full migrator then looks closer)."""
    if engine.dialect.name == "sqlite" and not sqlite_file(engine.url).exists():
        return None  # connecting would create the file (a read-only one would fail)
    try:
        async with engine.connect() as connection:
            current = (await connection.execute(SELECT_CURRENT)).scalars().all()
    except (OSError, TimeoutError, DBAPIError):
        return None
    if not current:
        return None  # a new database: no need to read the files
    heads = read_heads(alembic_ini)
    return None if heads is None else if_heads(current, heads)


def if_heads(current: Sequence[str], heads: frozenset[str]) -> tuple[str, ...] | None:
    """The database's revisions if they are exactly the heads, else None."""
    return tuple(current) if set(current) == heads and len(current) == len(heads) else None
