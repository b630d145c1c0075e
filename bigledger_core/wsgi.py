"""WSGI entry point for production servers: `gunicorn 'bigledger_core.wsgi:app'`."""
from .app import configure_logging, create_app, settle

app = create_app()
configure_logging(app)
settle()
