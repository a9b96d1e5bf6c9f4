"""The run-config keys' two written copies, generated from their declarations.

Each key is declared once, beside the code that reads it (``KEYS``, assembled in
:data:`server.config.KEYS`, with its default and its ``meaning``). From there come
pyproject.toml's ``[tool.flwr.app.config]`` (what `flwr run` starts from) and the table in
docs/configuration.md: ``spikefed config --write`` rewrites both, and
tests/test_config.py fails when either is stale.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import data
import models
import strategies
from server.config import SERVER_KEYS

# The keys by who declares them, in the order the generated copies list them.
GROUPS = {"The run (server/config.py)": SERVER_KEYS, "Data and partitions (data/)": data.KEYS,
          "Workloads and local training (models/)": models.KEYS,
          "Selection, faults and DP (strategies/; more in [strategies.md](strategies.md))": strategies.KEYS}

ROOT = Path(__file__).resolve().parents[1]
DOCS_START = "<!-- the key table is generated from the keys' declarations: `spikefed config --write` -->\n"
DOCS_END = "<!-- end of the generated key table -->\n"
PYPROJECT_SECTION = re.compile(r"(?ms)^\[tool\.flwr\.app\.config\]\n.*?(?=^\[|\Z)")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def docs_value(value) -> str:
    if value == "":
        return "(empty)"
    return f"`{toml_value(value).strip(chr(34))}`"


def pyproject_section() -> str:
    out = ["[tool.flwr.app.config]", "# Generated from the keys' declarations (`spikefed config --write`): edit them there."]
    for title, keys in GROUPS.items():
        out += [f"# {title.split(' (')[0]}", *(f"{name} = {toml_value(key.default)}" for name, key in keys.items())]
    return "\n".join(out) + "\n\n"


def docs_table() -> str:
    out = []
    for title, keys in GROUPS.items():
        out += [f"**{title}**", "", "| key | default | meaning |", "| --- | --- | --- |",
                *(f"| `{name}` | {docs_value(key.default)} | {key.meaning} |" for name, key in keys.items()), ""]
    return DOCS_START + "\n".join(out) + DOCS_END


def rendered() -> dict[Path, str]:
    """pyproject.toml and docs/configuration.md as the declarations make them (path -> text)."""
    pyproject, docs = ROOT / "pyproject.toml", ROOT / "docs" / "configuration.md"
    text = docs.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        raise ValueError(f"{docs} lacks the markers of the generated table ({DOCS_START.strip()} ... {DOCS_END.strip()})")
    head, rest = text.split(DOCS_START, 1)
    return {pyproject: PYPROJECT_SECTION.sub(lambda _: pyproject_section(), pyproject.read_text(), count=1),
            docs: head + docs_table() + rest.split(DOCS_END, 1)[1]}
