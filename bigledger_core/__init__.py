"""BigLedger host: app factory, plugin contract, modules, migrations, security, CLI."""
__version__ = "0.1.0"

from .plugins import hookimpl  # noqa: F401  (plugins write @bigledger_core.hookimpl)
