"""Typed errors. Messages are translatable; `str(error)` renders them in the current language."""
from __future__ import annotations


class BigLedgerError(Exception):
    """Base of every error the host raises on purpose; its message is meant for a person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return str(self.message)


class ConfigError(BigLedgerError):
    """The configuration (environment, settings) is wrong; names the setting at fault."""


class PluginError(BigLedgerError):
    """A plugin cannot be loaded: broken import, bad manifest, misspelt hook, missing requirement."""

    def __init__(self, plugin: str, message):
        super().__init__(message)
        self.plugin = plugin


class ModuleStateError(BigLedgerError):
    """A module cannot be switched on or off as asked (unknown name, requirement in the way)."""
