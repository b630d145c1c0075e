"""A second subscriber plugin ("listener"), loaded by tests that need two subscribers of one event."""
from bigledger_core import hookimpl

RECEIVED = []


@hookimpl
def bigledger_manifest():
    return {"name": "listener", "version": "1.0", "label": {"zh": "监听", "en": "Listener"}, "requires": []}


@hookimpl
def bigledger_inbound_message(event):
    RECEIVED.append(event)
