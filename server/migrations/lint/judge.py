"""The judge: operations (from op.* objects or parsed SQL) in, findings out, knowing which tables are new."""

import dataclasses
import re

from .rules import RULES, SERIAL_TYPES, VOLATILE_FUNCTIONS

# A column type as the rules compare them: ("varchar", 50), ("varchar", None) unbounded, ("text", None),
# or ("other", "<name>").
TypeShape = tuple[str, int | str | None]

_VOLATILE_CALL = re.compile(r"\b(" + "|".join(sorted(VOLATILE_FUNCTIONS)) + r")\s*\(", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str  # squawk's id where squawk has the rule
    level: str  # "error" | "warning"
    revision: str
    operation: str  # short text of the operation or the SQL statement
    message: str  # what goes wrong and the safe way to do it, one line
    accepted: str | None = None  # the reason from the revision's lint_ignore, when accepted

    def __str__(self) -> str:
        line = f"{self.revision} {self.level} {self.rule}: {self.operation}: {self.message}"
        return f"{line} (accepted: {self.accepted})" if self.accepted is not None else line


def is_volatile_default(expression_sql: str) -> bool:
    return bool(_VOLATILE_CALL.search(expression_sql))


def is_widening(old: TypeShape | None, new: TypeShape) -> bool:
    """varchar(n) → varchar(m ≥ n), varchar → unbounded varchar or text, text → text: no rewrite."""
    if old is None:
        return False
    (old_kind, old_length), (new_kind, new_length) = old, new
    if old_kind not in ("varchar", "text"):
        return False
    if new_kind == "text":
        return True
    if new_kind == "varchar" and old_kind == "varchar":
        return new_length is None or (old_length is not None and new_length >= old_length)
    return False


def short(text: str, limit: int = 160) -> str:
    """SQL on one line, cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Judge:
    """Applies the rules to one pending set; each operation is reported by capture.py or sql.py."""

    def __init__(self, dialect: str, column_type_lookup=None):
        self.dialect = dialect
        self.column_type_lookup = column_type_lookup  # (table, column) -> TypeShape | None, from the database
        self.new_tables: set[str] = set()
        self.new_indexes: set[str] = set()
        self.findings: list[Finding] = []
        self.revision = ""
        self.lint_ignore: dict[str, str] = {}
        self.in_autocommit_block = False

    # --- bookkeeping -----------------------------------------------------------------------------------

    def start_revision(self, revision: str, lint_ignore: dict[str, str], alone: bool) -> None:
        self.revision, self.lint_ignore, self.in_autocommit_block = revision, lint_ignore, False
        if alone:
            self.new_tables, self.new_indexes = set(), set()

    def report(self, rule_id: str, operation: str) -> None:
        rule = RULES[rule_id]
        if self.dialect not in rule.dialects:
            return
        accepted = self.lint_ignore.get(rule_id)
        self.findings.append(Finding(rule_id, rule.level, self.revision, operation, rule.message, accepted))

    def is_new(self, table: str | None) -> bool:
        return table is not None and table in self.new_tables

    # --- operations ------------------------------------------------------------------------------------

    def created_table(self, table: str) -> None:
        self.new_tables.add(table)

    def dropped_table(self, table: str, operation: str) -> None:
        if self.is_new(table):
            self.new_tables.discard(table)  # no running release reads a table created in this pending set
        else:
            self.report("ban-drop-table", operation)

    def renamed_table(self, old: str, new: str, operation: str) -> None:
        if self.is_new(old):
            self.new_tables.add(new)
        else:
            self.report("renaming-table", operation)

    def added_column(
        self,
        table: str,
        operation: str,
        *,
        not_null: bool,
        default_sql: str | None,
        type_name: str = "",
        unique: bool = False,
        validated_constraint: bool = False,
    ) -> None:
        if self.is_new(table):
            return
        if not_null and default_sql is None:
            self.report("adding-not-nullable-field", operation)
        if (default_sql is not None and is_volatile_default(default_sql)) or type_name.lower() in SERIAL_TYPES:
            self.report("adding-field-with-volatile-default", operation)
        if unique:
            self.report("disallowed-unique-constraint", operation)
        if validated_constraint:
            self.report("constraint-missing-not-valid", operation)

    def dropped_column(self, table: str, operation: str) -> None:
        if not self.is_new(table):
            self.report("ban-drop-column", operation)

    def renamed_column(self, table: str, operation: str) -> None:
        if not self.is_new(table):
            self.report("renaming-column", operation)

    def changed_type(self, table: str, column: str, old: TypeShape | None, new: TypeShape, operation: str) -> None:
        if self.is_new(table):
            return
        if old is None and self.column_type_lookup is not None:
            old = self.column_type_lookup(table, column)
        if not is_widening(old, new):
            self.report("changing-column-type", operation)

    def set_not_null(self, table: str, operation: str) -> None:
        if not self.is_new(table):
            self.report("setting-not-nullable-field", operation)

    def created_index(self, table: str, name: str | None, concurrently: bool, operation: str) -> None:
        if concurrently and not self.in_autocommit_block:
            self.report("ban-concurrent-index-creation-in-transaction", operation)
        if self.is_new(table):
            if name:
                self.new_indexes.add(name)
        elif not concurrently:
            self.report("require-concurrent-index-creation", operation)

    def dropped_index(self, table: str | None, name: str | None, concurrently: bool, operation: str) -> None:
        if concurrently and not self.in_autocommit_block:
            self.report("ban-concurrent-index-creation-in-transaction", operation)
        if not concurrently and not self.is_new(table) and name not in self.new_indexes:
            self.report("require-concurrent-index-deletion", operation)

    def added_constraint(self, table: str, kind: str, not_valid: bool, using_index: bool, operation: str) -> None:
        """kind: "foreign key" | "check" | "unique" | "primary key"."""
        if self.is_new(table):
            return
        if kind in ("foreign key", "check") and not not_valid:
            self.report("constraint-missing-not-valid", operation)
        if kind in ("unique", "primary key") and not using_index:
            self.report("disallowed-unique-constraint", operation)

    def copied_table(self, table: str, operation: str) -> None:
        if not self.is_new(table):
            self.report("batch-table-copy", operation)

    def unclassified(self, operation: str) -> None:
        self.report("unclassified-sql", operation)

    def failed(self, operation: str) -> None:
        self.report("lint-failed", operation)
