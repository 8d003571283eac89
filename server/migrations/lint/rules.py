"""The rules: each with squawk's id (where squawk has the rule), a level, what goes wrong and the safe recipe."""

import dataclasses

ERROR = "error"
WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    level: str
    dialects: frozenset[str]  # the dialects on which the danger is real
    message: str  # what goes wrong, then the safe way, in one line


ALL = frozenset({"postgresql", "sqlite"})
POSTGRESQL = frozenset({"postgresql"})
SQLITE = frozenset({"sqlite"})

RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "adding-not-nullable-field",
            ERROR,
            ALL,
            "a NOT NULL column without a server default fails on a table with rows, and the running release"
            " does not fill it in: add it nullable (or with a server default), backfill, then set NOT NULL",
        ),
        Rule(
            "adding-field-with-volatile-default",
            ERROR,
            POSTGRESQL,
            "a volatile default (random(), gen_random_uuid(), clock_timestamp(), serial…) rewrites the table under"
            " an ACCESS EXCLUSIVE lock: add the column without a default, set the default, backfill in batches",
        ),
        Rule(
            "changing-column-type",
            ERROR,
            POSTGRESQL,
            "changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock (widening a varchar or"
            " making it text does not): add a new column, backfill it, switch reads, then drop the old one",
        ),
        Rule(
            "setting-not-nullable-field",
            ERROR,
            POSTGRESQL,
            "SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock: add CHECK (col IS NOT NULL) NOT VALID,"
            " VALIDATE CONSTRAINT, then SET NOT NULL (PostgreSQL ≥ 12 uses the check) and drop the check",
        ),
        Rule(
            "require-concurrent-index-creation",
            ERROR,
            POSTGRESQL,
            "CREATE INDEX blocks writes to the table until it is built: create it CONCURRENTLY"
            " (postgresql_concurrently=True) inside op.get_context().autocommit_block()",
        ),
        Rule(
            "constraint-missing-not-valid",
            ERROR,
            POSTGRESQL,
            "adding a foreign key or CHECK validates every row while it blocks writes: add it NOT VALID"
            " (postgresql_not_valid=True), then VALIDATE CONSTRAINT in a later revision",
        ),
        Rule(
            "disallowed-unique-constraint",
            ERROR,
            POSTGRESQL,
            "adding a UNIQUE or PRIMARY KEY constraint builds its index while it blocks reads and writes: create a"
            " unique index CONCURRENTLY, then ADD CONSTRAINT … USING INDEX",
        ),
        Rule(
            "ban-concurrent-index-creation-in-transaction",
            ERROR,
            POSTGRESQL,
            "CONCURRENTLY cannot run inside a transaction block, so the revision fails:"
            " put it inside `with op.get_context().autocommit_block():`",
        ),
        Rule(
            "ban-drop-column",
            ERROR,
            ALL,
            "the release still running reads the column and fails: stop using it in one release (expand),"
            " drop it in a later one (contract)",
        ),
        Rule(
            "ban-drop-table",
            ERROR,
            ALL,
            "the release still running reads the table and fails: stop using it in one release, drop it in a later one",
        ),
        Rule(
            "renaming-column",
            ERROR,
            ALL,
            "the release still running uses the old name and fails: add the new column, write both, backfill,"
            " switch reads, drop the old one in a later release",
        ),
        Rule(
            "renaming-table",
            ERROR,
            ALL,
            "the release still running uses the old name and fails: create the new table (or a view under the"
            " old name), move readers, drop the old one in a later release",
        ),
        Rule(
            "require-concurrent-index-deletion",
            WARNING,
            POSTGRESQL,
            "DROP INDEX blocks reads and writes of the table while it waits for its lock: drop it CONCURRENTLY"
            " (postgresql_concurrently=True) inside op.get_context().autocommit_block()",
        ),
        Rule(
            "batch-table-copy",
            WARNING,
            SQLITE,
            "batch mode copies the whole table into a new one while it holds the database's write lock:"
            " fine for small tables; for big ones, prefer operations SQLite does in place (add a nullable column)",
        ),
        Rule(
            "unclassified-sql",
            WARNING,
            ALL,
            "the lint cannot tell what this does to locks or to the running release: check it by hand, then"
            ' accept it with lint_ignore = {"unclassified-sql": "<why it is safe>"}',
        ),
        Rule(
            "lint-failed",
            WARNING,
            ALL,
            "the revision could not be linted (its upgrade() raised while recorded): check it by hand, or lint"
            " it against a database with --database-url",
        ),
        Rule(
            "lint-ignore-without-reason",
            ERROR,
            ALL,
            'lint_ignore must map each rule id to a non-empty reason: lint_ignore = {"<rule>": "<why it is safe>"}',
        ),
    )
}

# Functions PostgreSQL marks volatile that show up as column defaults; now() and CURRENT_TIMESTAMP are
# stable (evaluated once per statement), so PostgreSQL ≥ 11 adds such a column without a rewrite.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "setseed",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
