"""Pieces the benchmarks share: recording the SQL an app sends, to replay the same work on a raw connection."""
from __future__ import annotations


def capture(app):
    """Listen to the app's engine: returns the list that fills with (statement, parameters) of every SQL
    statement it sends, and a function that stops listening."""
    from sqlalchemy import event

    from bigledger_core.db import db

    with app.app_context():
        engine = db.engine
    statements: list[tuple] = []

    def listener(_conn, _cursor, sql, params, *_args):
        statements.append((sql, params))

    event.listen(engine, "before_cursor_execute", listener)
    return statements, lambda: event.remove(engine, "before_cursor_execute", listener)


def crm_statements(statements: list[tuple]) -> list[tuple]:
    """The statements that read CRM rows (not the sign-in, permission, module and team look-ups)."""
    return [(sql, params) for sql, params in statements
            if "crm_" in sql and "bl_team" not in sql and "ab_permission" not in sql]
