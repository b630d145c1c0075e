"""The database handle shared by the host and every plugin."""
from __future__ import annotations

import datetime as dt

from flask_appbuilder.models.sqla.base import SQLA
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes

db = SQLA()


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    """SQLite enforces foreign keys (and ON DELETE CASCADE) only when asked, per connection."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC: every timestamp is stored in UTC."""
    return dt.datetime.now(dt.UTC)


def insert_rows(session: Session, table, rows: list[dict], *, conflict: list[str] | None = None,
                 returning: tuple[str, ...] = ()) -> list[tuple]:
    """INSERT `rows` (dicts with the same keys) in the session's transaction, skipping those whose
    `conflict` key exists; returns the `returning` columns of the rows inserted.

    On PostgreSQL plain rows are sent with COPY (the rows stream to the server in one command, with its
    triggers and constraints applied as for INSERT); rows that may conflict or must return columns go through
    psycopg's pipelined executemany, one round trip per batch, instead of one multi-row statement whose
    thousands of placeholders the driver would parse on every call. Elsewhere it is SQLAlchemy's bulk INSERT."""
    if not rows:
        return []
    table = getattr(table, "__table__", table)
    columns = list(rows[0])
    if session.get_bind().dialect.name != "postgresql":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert

        statement = dialect_insert(table)
        if conflict:
            statement = statement.on_conflict_do_nothing(index_elements=conflict)
        if returning:
            return [tuple(row) for row in session.execute(
                statement.returning(*(table.c[name] for name in returning)), rows)]
        session.execute(statement, rows)
        return []
    from psycopg.types.json import Json

    json_columns = {c.name for c in table.columns if isinstance(c.type, sqltypes.JSON)}
    values = [tuple(Json(row[c]) if c in json_columns and row[c] is not None else row[c] for c in columns)
              for row in rows]
    cursor = session.connection().connection.driver_connection.cursor()
    with cursor:
        if not conflict and not returning:
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            return []
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
               + (f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING" if conflict else "")
               + (f" RETURNING {', '.join(returning)}" if returning else ""))
        out: list[tuple] = []
        cursor.executemany(sql, values, returning=bool(returning))
        if returning:
            while True:
                out.extend(tuple(row) for row in cursor.fetchall())
                if not cursor.nextset():
                    break
    return out


def reserve_ids(session: Session, table, count: int) -> list[int]:
    """PostgreSQL: `count` new values of the table's `id` sequence, for rows written with those ids (by
    `insert_rows`, whose COPY cannot return the ids the database would have given)."""
    table = getattr(table, "__table__", table)
    return list(session.scalars(text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                                     "FROM generate_series(1, :count)"), {"table": table.name, "count": count}))


def in_ids(session: Session, column, ids):
    """`column IN ids`. On PostgreSQL one array parameter (`column = ANY(%s)`): the statement's text stays
    the same whatever the number of ids, so neither SQLAlchemy nor the driver expands and parses hundreds of
    placeholders, and the server can keep its plan. Elsewhere a plain IN."""
    return ids_param(session.get_bind().dialect.name, column, None, ids)


def ids_param(dialect: str, column, name: str | None, ids=None):
    """`column IN :name`: one array parameter on PostgreSQL, an expanding IN elsewhere. Without `ids`, for a
    statement built once and run with other ids each time (their values come at execution; `dialect`, the
    engine's dialect name, is then part of the key the statement is cached under)."""
    from sqlalchemy import any_, bindparam

    value = {} if ids is None else {"value": list(ids)}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(column.type), **value))
    return column.in_(bindparam(name, expanding=True, **value))
