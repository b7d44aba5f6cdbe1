"""What the docs promise about the command line, read from the docs themselves so that tests
check the docs: the ``--json`` table of docs/cli.md and the README's walkthrough."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def json_shapes() -> dict[str, tuple[str, set[str], set[str]]]:
    """``{"alias add": ("object", required keys, optional keys), …}`` from docs/cli.md."""
    text = (REPO / "docs" / "cli.md").read_text()
    table = text.split("## `--json`", 1)[1]
    out: dict[str, tuple[str, set[str], set[str]]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[1] not in ("object", "list"):
            continue
        required = set(re.findall(r"(?<!\[)`([a-z0-9_]+)`(?!\])", cells[2]))
        optional = set(re.findall(r"\[`([a-z0-9_]+)`\]", cells[2]))
        for command in re.findall(r"`([a-z -]+)`", cells[0]):
            out[command] = (cells[1], required, optional)
    return out


def check_json(command: str, doc: Any) -> None:
    """``doc`` (what ``artifactfs COMMAND --json`` printed) has the documented shape."""
    kind, required, optional = json_shapes()[command]
    items = doc if kind == "list" else [doc]
    assert isinstance(doc, list if kind == "list" else dict), f"{command}: not a JSON {kind}"
    for item in items:
        keys = set(item)
        assert required <= keys <= required | optional, (
            f"docs/cli.md documents {sorted(required)} (and maybe {sorted(optional)}) for "
            f"`{command} --json`; it printed {sorted(keys)}: update the table or the command")


def readme_walkthrough() -> str:
    """The shell blocks of the README's walkthrough section, joined: run verbatim by a test."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Walkthrough", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks, "the README's walkthrough has no ```sh blocks"
    return "".join(blocks)
