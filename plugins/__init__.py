"""Built-in BigLedger modules, each a plugin loaded through the `bigledger.plugins` entry points."""
