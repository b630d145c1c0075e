"""The plugin host: discovers plugins, validates them, orders them by requirement, and calls their hooks.

Plugins come from the entry-point group `bigledger.plugins` (the built-in modules declare theirs in
this project's own `setup.cfg`) and from `BIGLEDGER_EXTRA_PLUGINS`. The host itself is the plugin
`core`, which uses the same public hooks as every other plugin.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError

log = logging.getLogger(__name__)

PROJECT = "bigledger"
ENTRY_POINT_GROUP = "bigledger.plugins"
CORE = "core"
# Functions with these prefixes are hook implementations even without the @hookimpl marker,
# so that a misspelt name is reported instead of silently ignored.
HOOK_PREFIXES = ("bigledger_", "crm_")

hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass
class Manifest:
    """What a plugin says about itself."""

    name: str
    version: str
    label: dict[str, str]
    requires: list[str] = field(default_factory=list)
    description: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def label_for(self, locale: str) -> str:
        return self.label.get(locale) or self.label.get("en") or self.name


class _Manager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIXES) and callable(getattr(plugin, name, None)):
            return {}
        return opts


@dataclass
class _Candidate:
    name: str | None  # None: taken from the plugin's manifest once imported
    source: str
    load: Callable[[], Any]


class PluginHost:
    """Loads every plugin once per process and answers which modules exist and in what order."""

    def __init__(self, offered: list[str] | None = None, strict: bool = True,
                 extra_plugins: Iterable[str] = (), discover: bool = True):
        self.pm = _Manager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.manifests: dict[str, Manifest] = {}
        self.failed: dict[str, str] = {}
        self.order: list[str] = []
        self._offered = offered
        self._strict = strict
        candidates = [_Candidate(CORE, "bigledger_core", lambda: importlib.import_module("bigledger_core.core_plugin"))]
        if discover:
            candidates += [_Candidate(ep.name, f"{ep.value} ({_dist_name(ep)})", ep.load)
                           for ep in entry_points(group=ENTRY_POINT_GROUP)]
        candidates += [_Candidate(None, path, lambda p=path: importlib.import_module(p))
                       for path in extra_plugins]
        self._load(candidates)

    # -- loading ---------------------------------------------------------------------------------
    def _fail(self, error: PluginError) -> None:
        if self._strict or error.plugin == CORE:
            raise error
        log.error("%s", error)
        self.failed[error.plugin] = str(error)
        if self.pm.has_plugin(error.plugin):
            self.pm.unregister(name=error.plugin)
        self.manifests.pop(error.plugin, None)

    def _load(self, candidates: list[_Candidate]) -> None:
        seen: set[str] = set()
        for cand in candidates:
            if cand.name in seen:
                continue  # an installed copy and an extra-plugins path of the same plugin
            try:
                plugin = cand.load()
            except Exception as exc:
                name = cand.name or cand.source
                self._fail(PluginError(name, f"plugin {name!r} ({cand.source}) failed to import: "
                                             f"{type(exc).__name__}: {exc}"))
                continue
            if cand.name is None:
                try:
                    cand.name = str(plugin.bigledger_manifest()["name"])
                except Exception:
                    cand.name = cand.source
                if cand.name in seen:
                    continue
            seen.add(cand.name)
            self._register(cand, plugin)
        self._check_unknown_hooks()
        self._select_offered()
        self._check_requirements()

    def _register(self, cand: _Candidate, plugin: ModuleType) -> None:
        try:
            self.pm.register(plugin, name=cand.name)
        except pluggy.PluginValidationError as exc:
            self._fail(PluginError(cand.name, f"plugin {cand.name!r}: {_hook_problem(exc)}"))
            return
        try:
            self.manifests[cand.name] = self._manifest(cand, plugin)
        except PluginError as exc:
            self._fail(exc)

    def _manifest(self, cand: _Candidate, plugin: ModuleType) -> Manifest:
        func = getattr(plugin, "bigledger_manifest", None)
        if func is None:
            raise PluginError(cand.name, f"plugin {cand.name!r} ({cand.source}) has no bigledger_manifest hook")
        try:
            data = func()
        except Exception as exc:
            raise PluginError(cand.name, f"plugin {cand.name!r}: bigledger_manifest raised "
                                         f"{type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise PluginError(cand.name, f"plugin {cand.name!r}: bigledger_manifest must return a dict")
        missing = [key for key in ("name", "version", "label") if not data.get(key)]
        if missing:
            raise PluginError(cand.name, f"plugin {cand.name!r}: manifest lacks {', '.join(missing)}")
        label = data["label"]
        if not isinstance(label, dict) or not {"zh", "en"} <= set(label):
            raise PluginError(cand.name, f"plugin {cand.name!r}: manifest label needs both 'zh' and 'en'")
        if data["name"] != cand.name:
            raise PluginError(cand.name, f"plugin {cand.name!r}: manifest name {data['name']!r} differs "
                                         f"from the entry point name {cand.name!r}")
        requires = list(data.get("requires") or [])
        if cand.name != CORE:
            requires = [CORE] + [r for r in requires if r != CORE]
        return Manifest(name=cand.name, version=str(data["version"]), label=dict(label), requires=requires,
                        description=dict(data.get("description") or {}), source=cand.source)

    def _check_unknown_hooks(self) -> None:
        known = {name for name in vars(self.pm.hook) if _is_spec(self.pm, name)}
        for name, plugin in list(self.pm.list_name_plugin()):
            unknown = [hook for hook in dir(plugin) if hook.startswith(HOOK_PREFIXES)
                       and callable(getattr(plugin, hook)) and not _is_spec(self.pm, hook)]
            if unknown:
                close = {hook: _closest(hook, known) for hook in unknown}
                hints = "; ".join(f"{hook!r}" + (f" (did you mean {close[hook]!r}?)" if close[hook] else "")
                                  for hook in unknown)
                self._fail(PluginError(name, f"plugin {name!r}: unknown hook {hints}"))

    def _select_offered(self) -> None:
        if self._offered is None:
            return
        installed = set(self.manifests) | set(self.failed)
        unknown = [name for name in self._offered if name not in installed]
        if unknown:
            raise ConfigError(f"BIGLEDGER_MODULES names unknown module(s): {', '.join(unknown)} "
                              f"(installed: {', '.join(sorted(installed - {CORE}))})")
        for name in list(self.manifests):
            if name != CORE and name not in self._offered:
                self.pm.unregister(name=name)
                del self.manifests[name]

    def _check_requirements(self) -> None:
        while True:  # a plugin whose requirement failed fails too, transitively
            broken = [(name, req) for name, m in self.manifests.items() for req in m.requires
                      if req not in self.manifests]
            if not broken:
                break
            for name, req in broken:
                if name not in self.manifests:
                    continue
                if req in self.failed:
                    why = f"plugin {name!r} requires {req!r}, which failed to load"
                elif self._offered is not None and req not in self._offered and self._installed(req):
                    why = f"plugin {name!r} requires {req!r}, which BIGLEDGER_MODULES leaves out"
                else:
                    why = f"plugin {name!r} requires {req!r}, which is not installed"
                self._fail(PluginError(name, why))
        while True:
            try:
                self.order = _topological(self.manifests)
                return
            except _Cycle as cycle:
                for name in cycle.members:
                    self._fail(PluginError(name, f"plugin {name!r} is in a requirement cycle: {cycle.path}"))

    def _installed(self, name: str) -> bool:
        return any(ep.name == name for ep in entry_points(group=ENTRY_POINT_GROUP))

    # -- queries ------------------------------------------------------------------------------------
    @property
    def modules(self) -> list[str]:
        """Every module this deployment offers, core first, each after what it requires."""
        return list(self.order)

    def dependents(self, name: str) -> list[str]:
        """Modules that require `name`, directly."""
        return [m for m in self.order if name in self.manifests[m].requires]

    def call(self, plugin: str, hook: str, **kwargs) -> Any:
        """Call one plugin's implementation of `hook` (None when it has none)."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin_name == plugin:
                return impl.function(**kwargs)
        return None

    def call_each(self, hook: str, modules: Iterable[str] | None = None, *,
                  on_error: Callable[[str, Exception], None] | None = None, **kwargs) -> list[tuple[str, Any]]:
        """Call `hook` on each plugin in requirement order; returns (plugin, answer) pairs. With `on_error`, a
        plugin that raises is logged, left out of the answers and handed to `on_error(plugin, exception)` before
        the next plugin is called (which may raise to stop); without it, the exception propagates."""
        wanted = self.order if modules is None else [m for m in self.order if m in set(modules)]
        impls = {impl.plugin_name: impl for impl in getattr(self.pm.hook, hook).get_hookimpls()}
        answers = []
        for name in wanted:
            if name not in impls:
                continue
            if on_error is None:
                answers.append((name, impls[name].function(**kwargs)))
                continue
            try:
                answers.append((name, impls[name].function(**kwargs)))
            except Exception as exc:  # one module's failure must not take the page down
                log.exception("plugin %s failed in %s", name, hook)
                on_error(name, exc)
        return answers

    def ask(self, hook: str, enabled: Iterable[str], **kwargs) -> Any:
        """Call a firstresult service hook on every plugin except the modules not in `enabled` (plugins
        registered outside the module system are asked too), in pluggy's order: `tryfirst`/`trylast` count."""
        wanted = set(enabled)
        off = [self.pm.get_plugin(name) for name in self.modules if name not in wanted]
        return self.pm.subset_hook_caller(hook, remove_plugins=[p for p in off if p is not None])(**kwargs)

    def hookimpls(self, hook: str, modules: Iterable[str]):
        """Implementations of `hook` belonging to `modules`, in pluggy's call order."""
        allowed = set(modules)
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            return []
        return [impl for impl in reversed(caller.get_hookimpls()) if impl.plugin_name in allowed]


def _is_spec(pm: pluggy.PluginManager, name: str) -> bool:
    caller = vars(pm.hook).get(name)
    return caller is not None and caller.spec is not None


def _closest(name: str, known: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _hook_problem(exc: pluggy.PluginValidationError) -> str:
    # pluggy's message names the plugin object by repr; keep the part about the hook.
    text = str(exc)
    marker = "for hook "
    if marker in text:
        text = "hook " + text.split(marker, 1)[1]
    return " ".join(text.split())


def _dist_name(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "entry point"


class _Cycle(Exception):
    def __init__(self, members: list[str], path: str):
        super().__init__(path)
        self.members, self.path = members, path


def _topological(manifests: dict[str, Manifest]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):]
            raise _Cycle(cycle, " -> ".join(cycle + [name]))
        state[name] = "visiting"
        for req in manifests[name].requires:
            visit(req, path + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(manifests, key=lambda n: (n != CORE, n)):
        visit(name, [])
    return order
