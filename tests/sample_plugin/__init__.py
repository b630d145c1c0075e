"""A tiny plugin used by the tests: it implements every hook of bigledger_core.hookspecs."""
