"""Documentation stays complete: every hook, setting and command is described."""
import re
from pathlib import Path

import click

from bigledger_core import hookspecs
from bigledger_core.cli import cli
from bigledger_core.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DOC = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _hookspecs():
    return sorted(name for name, value in vars(hookspecs).items()
                  if callable(value) and name.startswith(("bigledger_", "crm_")))


def test_every_hookspec_has_a_section_with_an_example_in_the_plugin_guide():
    sections = {}  # a heading may name several hooks that share one explanation
    for heading, body in re.findall(r"^### ([^\n]*)\n(.*?)(?=^### |\Z)", PLUGINS_DOC, flags=re.MULTILINE | re.DOTALL):
        for name in re.findall(r"`(\w+)[^`]*`", heading):
            sections[name] = body
    missing = [name for name in _hookspecs() if name not in sections]
    assert missing == []
    without_example = [name for name in _hookspecs() if "```python" not in sections[name]]
    assert without_example == []


def test_every_hookspec_has_a_docstring():
    assert [name for name in _hookspecs() if not (getattr(hookspecs, name).__doc__ or "").strip()] == []


def test_every_setting_is_in_the_readme_configuration_table():
    assert [s.env for s in SETTINGS if f"| `{s.env}` |" not in README] == []


def test_every_command_is_in_the_readme():
    def walk(group, prefix):
        for name, command in group.commands.items():
            yield f"{prefix} {name}"
            if isinstance(command, click.Group):
                yield from walk(command, f"{prefix} {name}")

    assert [c for c in walk(cli, "bigledger") if c not in README] == []


def test_every_event_is_in_the_catalogue_with_its_payload_fields(app):
    from bigledger_core.events import event_types

    catalogue = PLUGINS_DOC.split("### Event catalogue", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|(.*)$", catalogue, flags=re.MULTILINE)}
    with app.app_context():
        types = event_types(app.extensions["bigledger"])
    assert sorted(types) == sorted(rows)
    for name, etype in types.items():
        missing = [f for f in etype.schema().fields if f"`{f}`" not in rows[name]]
        assert missing == [], f"{name}: fields missing from the catalogue"
