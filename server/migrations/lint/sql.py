"""Raw SQL (op.execute) parsed with PostgreSQL's own grammar (pglast, libpg_query) and held to the rules."""

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.stream import RawStream

from .judge import Judge, TypeShape, short

# Statements that neither take a lock worth a finding nor break the running release.
HARMLESS_STATEMENTS = (
    ast.SelectStmt,
    ast.InsertStmt,
    ast.UpdateStmt,
    ast.DeleteStmt,
    ast.VariableSetStmt,
    ast.VariableShowStmt,
    ast.CommentStmt,
    ast.CreateStmt,
    ast.CreateTableAsStmt,
    ast.ViewStmt,
    ast.CreateSeqStmt,
    ast.CreateFunctionStmt,
    ast.CreateEnumStmt,
    ast.CreateExtensionStmt,
    ast.CreateSchemaStmt,
    ast.GrantStmt,
    ast.ExplainStmt,
)

# ALTER TABLE sub-commands that only touch the catalog briefly.
HARMLESS_ALTER_TABLE = frozenset(
    {
        AlterTableType.AT_ColumnDefault,
        AlterTableType.AT_DropNotNull,
        AlterTableType.AT_DropConstraint,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_SetStatistics,
    }
)

CONSTRAINT_KINDS = {
    ConstrType.CONSTR_FOREIGN: "foreign key",
    ConstrType.CONSTR_CHECK: "check",
    ConstrType.CONSTR_UNIQUE: "unique",
    ConstrType.CONSTR_PRIMARY: "primary key",
}


def judge_sql(judge: Judge, sql: str) -> None:
    """Every statement in sql, classified; a statement the grammar or the rules do not know is unclassified."""
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        judge.unclassified(short(sql))
        return
    for raw in statements:
        text = short(sql[raw.stmt_location : raw.stmt_location + raw.stmt_len] if raw.stmt_len else sql)
        judge_statement(judge, raw.stmt, text)


def judge_statement(judge: Judge, statement: ast.Node, text: str) -> None:
    if isinstance(statement, ast.CreateStmt):
        judge.created_table(statement.relation.relname)
    elif isinstance(statement, ast.CreateTableAsStmt):
        judge.created_table(statement.into.rel.relname)
    elif isinstance(statement, HARMLESS_STATEMENTS):
        pass
    elif isinstance(statement, ast.AlterTableStmt) and statement.objtype == ObjectType.OBJECT_TABLE:
        table = statement.relation.relname
        for command in statement.cmds:
            judge_alter_table(judge, table, command, text)
    elif isinstance(statement, ast.IndexStmt):
        judge.created_index(statement.relation.relname, statement.idxname, bool(statement.concurrent), text)
    elif isinstance(statement, ast.DropStmt) and statement.removeType == ObjectType.OBJECT_TABLE:
        for names in statement.objects:
            judge.dropped_table(names[-1].sval, text)
    elif isinstance(statement, ast.DropStmt) and statement.removeType == ObjectType.OBJECT_INDEX:
        for names in statement.objects:
            judge.dropped_index(None, names[-1].sval, bool(statement.concurrent), text)
    elif isinstance(statement, ast.RenameStmt) and statement.renameType == ObjectType.OBJECT_TABLE:
        judge.renamed_table(statement.relation.relname, statement.newname, text)
    elif isinstance(statement, ast.RenameStmt) and statement.renameType == ObjectType.OBJECT_COLUMN:
        judge.renamed_column(statement.relation.relname, text)
    elif isinstance(statement, ast.RenameStmt) and statement.renameType in (
        ObjectType.OBJECT_INDEX,
        ObjectType.OBJECT_TABCONSTRAINT,
    ):
        pass
    else:
        judge.unclassified(text)


def judge_alter_table(judge: Judge, table: str, command: ast.AlterTableCmd, text: str) -> None:
    subtype = command.subtype
    if subtype == AlterTableType.AT_AddColumn:
        column: ast.ColumnDef = command.def_
        constraints = column.constraints or ()
        kinds = {constraint.contype for constraint in constraints}
        default = next((c.raw_expr for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
        judge.added_column(
            table,
            text,
            not_null=ConstrType.CONSTR_NOTNULL in kinds or ConstrType.CONSTR_PRIMARY in kinds,
            default_sql=RawStream()(default) if default is not None else None,
            type_name=column.typeName.names[-1].sval,
            unique=bool(kinds & {ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY}),
            validated_constraint=any(
                c.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not c.skip_validation
                for c in constraints
            ),
        )
    elif subtype == AlterTableType.AT_DropColumn:
        judge.dropped_column(table, text)
    elif subtype == AlterTableType.AT_AlterColumnType:
        judge.changed_type(table, command.name, None, type_shape(command.def_.typeName), text)
    elif subtype == AlterTableType.AT_SetNotNull:
        judge.set_not_null(table, text)
    elif subtype == AlterTableType.AT_AddConstraint and command.def_.contype in CONSTRAINT_KINDS:
        constraint: ast.Constraint = command.def_
        kind = CONSTRAINT_KINDS[constraint.contype]
        judge.added_constraint(table, kind, bool(constraint.skip_validation), bool(constraint.indexname), text)
    elif subtype in HARMLESS_ALTER_TABLE:
        pass
    else:
        judge.unclassified(text)


def type_shape(type_name: ast.TypeName) -> TypeShape:
    name = type_name.names[-1].sval.lower()
    length = type_name.typmods[0].val.ival if type_name.typmods else None
    if name in ("varchar", "text"):
        return (name, length)
    return ("other", name)
