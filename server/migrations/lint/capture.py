"""Run a revision's upgrade() against a recording Operations: every op.* call is judged, none is executed."""

import contextlib
import contextvars
import re

import sqlalchemy as sa
from alembic.operations import BatchOperations, Operations, ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ClauseElement

from .judge import Judge, TypeShape, short
from .sql import judge_sql

# Compiles op.execute() constructs to the SQL PostgreSQL would get; "$1" placeholders (when values cannot be
# rendered inline) are still valid PostgreSQL grammar, so pglast parses them.
POSTGRESQL_DIALECT = postgresql.dialect(paramstyle="numeric_dollar")

# Statements op.get_bind() may run for real while a revision is linted: they only read.
_READ = re.compile(r"^\s*(select|with|show|explain|values|pragma\s+[\w.]+\s*(\(|;|$))", re.IGNORECASE)
_WRITES = re.compile(r"\b(insert|update|delete|merge)\b", re.IGNORECASE)
_NO_OP = "SELECT 1 WHERE 1 = 0"
CONSTRAINT_KINDS = (
    (sa.ForeignKeyConstraint, "foreign key"),
    (sa.CheckConstraint, "check"),
    (sa.UniqueConstraint, "unique"),
    (sa.PrimaryKeyConstraint, "primary key"),
)


@contextlib.contextmanager
def installed_as_op(operations: Operations):
    """Make `from alembic import op` in revision modules point at operations while the block runs.

    Alembic's public Operations.context() always installs a plain Operations, so this uses the private proxy
    machinery (keyed by class: ours shares Operations' entry); tests/migrations/test_lint.py fails by name
    if Alembic renames it.
    """
    operations._setups[type(operations)] = operations._setups[Operations]
    operations._install_proxy()
    try:
        yield operations
    finally:
        operations._remove_proxy()


def compile_postgresql(statement) -> str:
    if isinstance(statement, str):
        return statement
    try:
        return str(statement.compile(dialect=POSTGRESQL_DIALECT, compile_kwargs={"literal_binds": True}))
    except (sa.exc.CompileError, NotImplementedError):
        return str(statement.compile(dialect=POSTGRESQL_DIALECT))


def sa_type_shape(type_: sa.types.TypeEngine) -> TypeShape:
    if isinstance(type_, sa.Enum | sa.CHAR):
        return ("other", type(type_).__name__.lower())
    if isinstance(type_, sa.Text):
        return ("text", None)
    if isinstance(type_, sa.String):
        return ("varchar", type_.length)
    return ("other", type_.compile(dialect=POSTGRESQL_DIALECT).lower())


def default_sql(column: sa.Column) -> str | None:
    """The server default as PostgreSQL SQL text; None when the column has none."""
    default = column.server_default
    if default is None:
        return None
    if isinstance(default, sa.Identity):
        return "nextval(identity)"  # an identity column is filled from a sequence: a rewrite, like serial
    if isinstance(default, sa.Computed):
        return "generated()" if default.persisted is not False else "virtual"
    argument = getattr(default, "arg", None)
    if isinstance(argument, ClauseElement):
        return compile_postgresql(argument)
    return str(argument)


def column_text(column: sa.Column) -> str:
    text = f"{column.name} {column.type.compile(dialect=POSTGRESQL_DIALECT)}"
    if not column.nullable:
        text += " NOT NULL"
    default = default_sql(column)
    return f"{text} DEFAULT {default}" if default is not None else text


class Recorder:
    """Turns Alembic operation objects into calls on the judge."""

    def __init__(self, judge: Judge, context: MigrationContext):
        self.judge = judge
        self.context = context

    @contextlib.contextmanager
    def autocommit_block(self):
        """Stands in for MigrationContext.autocommit_block, which would commit the caller's transaction."""
        self.judge.in_autocommit_block = True
        try:
            yield
        finally:
            self.judge.in_autocommit_block = False

    def record(self, operation: ops.MigrateOperation) -> None:
        judge = self.judge
        if isinstance(operation, ops.CreateTableOp):
            judge.created_table(operation.table_name)
        elif isinstance(operation, ops.DropTableOp):
            judge.dropped_table(operation.table_name, f"drop_table {operation.table_name}")
        elif isinstance(operation, ops.RenameTableOp):
            text = f"rename_table {operation.table_name} TO {operation.new_table_name}"
            judge.renamed_table(operation.table_name, operation.new_table_name, text)
        elif isinstance(operation, ops.AddColumnOp):
            self.record_add_column(operation.table_name, operation.column)
        elif isinstance(operation, ops.DropColumnOp):
            judge.dropped_column(operation.table_name, f"drop_column {operation.table_name}.{operation.column_name}")
        elif isinstance(operation, ops.AlterColumnOp):
            self.record_alter_column(operation)
        elif isinstance(operation, ops.CreateIndexOp):
            columns = ", ".join(str(c) for c in operation.columns)
            concurrently = bool(operation.kw.get("postgresql_concurrently"))
            text = f"create_index {operation.index_name} ON {operation.table_name} ({columns})"
            text += " CONCURRENTLY" if concurrently else ""
            judge.created_index(operation.table_name, operation.index_name, concurrently, text)
        elif isinstance(operation, ops.DropIndexOp):
            concurrently = bool(operation.kw.get("postgresql_concurrently"))
            text = f"drop_index {operation.index_name}" + (" CONCURRENTLY" if concurrently else "")
            judge.dropped_index(operation.table_name, operation.index_name, concurrently, text)
        elif isinstance(operation, ops.AddConstraintOp):
            self.record_add_constraint(operation)
        elif isinstance(operation, ops.ExecuteSQLOp):
            judge_sql(judge, compile_postgresql(operation.sqltext))
        elif isinstance(
            operation,
            ops.DropConstraintOp | ops.BulkInsertOp | ops.CreateTableCommentOp | ops.DropTableCommentOp,
        ):
            pass  # catalog-only or data: no lock worth a finding, nothing the running release reads breaks
        else:
            judge.unclassified(f"{type(operation).__name__} on {getattr(operation, 'table_name', '?')}")

    def record_add_column(self, table: str, column: sa.Column) -> None:
        constraints = [c for c in column.constraints if isinstance(c, sa.CheckConstraint)]
        self.judge.added_column(
            table,
            f"add_column {table}.{column_text(column)}",
            not_null=not column.nullable,
            default_sql=default_sql(column),
            unique=bool(column.unique or column.primary_key),
            validated_constraint=bool(column.foreign_keys or constraints),
        )

    def record_alter_column(self, operation: ops.AlterColumnOp) -> None:
        table, column = operation.table_name, operation.column_name
        where = f"{table}.{column}"
        if operation.modify_name is not None:
            self.judge.renamed_column(table, f"alter_column {where} new_column_name={operation.modify_name}")
        if operation.modify_type is not None:
            old = sa_type_shape(operation.existing_type) if operation.existing_type is not None else None
            new_type = operation.modify_type.compile(dialect=POSTGRESQL_DIALECT)
            text = f"alter_column {where} type_={new_type}"
            self.judge.changed_type(table, column, old, sa_type_shape(operation.modify_type), text)
        if operation.modify_nullable is False and operation.existing_nullable is not False:
            self.judge.set_not_null(table, f"alter_column {where} nullable=False")

    def record_add_constraint(self, operation: ops.AddConstraintOp) -> None:
        constraint = operation.to_constraint(self.context)
        kind = next((kind for type_, kind in CONSTRAINT_KINDS if isinstance(constraint, type_)), None)
        table = constraint.table.name
        text = f"add {kind or type(constraint).__name__} {constraint.name or ''} ON {table}".replace("  ", " ")
        if kind is None:
            self.judge.unclassified(text)
            return
        not_valid = bool(constraint.dialect_options["postgresql"].get("not_valid"))
        self.judge.added_constraint(table, kind, not_valid, False, text)

    def record_batch(self, table: str, recorded: list[ops.MigrateOperation], recreate: str) -> None:
        """The batch's operations, and on SQLite whether Alembic's batch mode copies the table to apply them."""
        for operation in recorded:
            self.record(operation)
        if sqlite_batch_copies_table(recorded, recreate):
            names = ", ".join(type(op).__name__ for op in recorded)
            self.judge.copied_table(table, f"batch_alter_table {table} ({names})")

    def record_executed(self, statement: str) -> None:
        """A write sent through op.get_bind(): judged as if given to op.execute, never run."""
        judge_sql(self.judge, statement)


def sqlite_batch_copies_table(recorded: list[ops.MigrateOperation], recreate: str) -> bool:
    """What alembic.ddl.sqlite.SQLiteImpl.requires_recreate_in_batch decides, from the operation objects.

    In "auto" mode only adding a column (with no server default, or a plain-string one, and no stored
    computed value) and creating or dropping an index are done in place; tests check this against Alembic.
    """
    if recreate != "auto":
        return recreate == "always"
    for operation in recorded:
        if isinstance(operation, ops.AddColumnOp):
            default = operation.column.server_default
            if isinstance(default, sa.DefaultClause) and isinstance(default.arg, ClauseElement):
                return True
            if isinstance(default, sa.Computed) and default.persisted:
                return True
        elif not isinstance(operation, ops.CreateIndexOp | ops.DropIndexOp):
            return True
    return False


class _BatchTarget:
    """What the batch_* operation constructors read from BatchOperations.impl: the table being altered."""

    def __init__(self, table_name: str, schema: str | None):
        self.table_name, self.schema = table_name, schema


class RecordingBatchOperations(BatchOperations):
    def __init__(self, migration_context: MigrationContext, table_name: str, schema: str | None):
        super().__init__(migration_context, impl=_BatchTarget(table_name, schema))
        self.recorded: list[ops.MigrateOperation] = []

    def invoke(self, operation: ops.MigrateOperation):
        self.recorded.append(operation)


class RecordingOperations(Operations):
    """Operations whose invoke() records the operation object instead of dispatching it to the database."""

    def __init__(self, migration_context: MigrationContext, recorder: Recorder):
        super().__init__(migration_context)
        self.recorder = recorder

    def invoke(self, operation: ops.MigrateOperation):
        self.recorder.record(operation)
        if isinstance(operation, ops.CreateTableOp):
            return operation.to_table(self.migration_context)  # revisions pass it on to bulk_insert
        return None

    @contextlib.contextmanager
    def batch_alter_table(self, table_name, schema=None, recreate="auto", **_table_and_reflection_options):
        batch = RecordingBatchOperations(self.migration_context, table_name, schema)
        yield batch
        self.recorder.record_batch(table_name, batch.recorded, recreate)


def is_read(statement: str) -> bool:
    """SELECT, SHOW, a PRAGMA query (not an assignment), a WITH or EXPLAIN that writes nothing."""
    match = _READ.match(statement)
    if not match:
        return False
    first = match.group(1).split()[0].lower()
    if first == "pragma":
        return "=" not in statement
    return first not in ("with", "explain") or not _WRITES.search(statement)


@contextlib.contextmanager
def writes_recorded_not_run(connection: sa.Connection, recorder: Recorder):
    """While the block runs, statements sent on connection that would write are judged and replaced by a
    no-op; reads run. Everything happens in a transaction (or savepoint) rolled back at the end."""

    def before_execute(conn, element, multiparams, params, execution_options):
        if isinstance(element, sa.sql.Select | sa.sql.CompoundSelect):
            return element, multiparams, params
        statement = compile_postgresql(element)
        if is_read(statement):
            return element, multiparams, params
        recorder.record_executed(statement)
        return sa.text(_NO_OP), [], {}

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
        if is_read(statement):
            return statement, parameters
        recorder.record_executed(statement)
        return _NO_OP, ([] if executemany else ())

    transaction = connection.begin_nested() if connection.in_transaction() else connection.begin()
    sa.event.listen(connection, "before_execute", before_execute, retval=True)
    sa.event.listen(connection, "before_cursor_execute", before_cursor_execute, retval=True)
    try:
        yield
    finally:
        sa.event.remove(connection, "before_cursor_execute", before_cursor_execute)
        sa.event.remove(connection, "before_execute", before_execute)
        transaction.rollback()


_linting = contextvars.ContextVar("linting", default=False)


def is_linting() -> bool:
    """True while a revision's upgrade() runs to be linted (its operations recorded, not applied).

    The lint runs a revision's Python once more than Alembic does: work with effects of its own (a
    backfill computed in Python, a call to another service, a sleep) may skip itself then."""
    return _linting.get()


def record_upgrade(script, judge: Judge, connection: sa.Connection) -> None:
    """Run script's upgrade() with `op` recording into judge; a revision that raises is `lint-failed`."""
    context = MigrationContext.configure(connection=connection)
    linting = _linting.set(True)
    recorder = Recorder(judge, context)
    context.autocommit_block = recorder.autocommit_block  # the real one commits the caller's transaction
    operations = RecordingOperations(context, recorder)
    try:
        with writes_recorded_not_run(connection, recorder), installed_as_op(operations):
            script.module.upgrade()
    except Exception as exc:  # any error in a revision's own code: reported, the lint goes on
        judge.failed(f"upgrade() raised {type(exc).__name__}: {short(str(exc), 120)}")
    finally:
        _linting.reset(linting)
