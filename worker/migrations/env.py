"""Alembic environment: migrations run on the connection the worker hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from worker.ledger.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is None:
    raise RuntimeError("run migrations through `retention migrate`, which supplies a connection")
run(connection)
