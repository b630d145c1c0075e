"""Alembic environment: runs on the connection the host hands over (see bigledger_core.migrate)."""
from alembic import context
from flask_appbuilder import Model

import bigledger_core.models  # noqa: F401  (registers the host's tables on the metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `bigledger db upgrade`")

context.configure(connection=connection, target_metadata=Model.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
