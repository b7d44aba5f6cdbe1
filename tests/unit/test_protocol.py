"""The control protocol (mount/protocol.py) against its documentation and its own rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from artifactfs import errors
from artifactfs.errors import ArtifactfsError, UsageError
from artifactfs.mount import protocol
from artifactfs.mount.control import ControlServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "control.md"


def test_the_documented_requests_are_the_protocols() -> None:
    table = DOC.read_text().split("## Requests", 1)[1].split("\n## ", 1)[0]
    rows = table.split("|---", 1)[1]  # below the header
    documented = re.findall(r"^\| `([a-z.]+)` \|", rows, re.M)
    assert sorted(documented) == sorted(protocol.OPS)
    assert len(set(protocol.OPS)) == len(protocol.OPS)


def test_a_server_serves_only_requests_of_the_protocol(tmp_path: Path) -> None:
    async def handler(req: dict[str, object], peer: object) -> dict[str, object]:
        return {}

    srv = ControlServer(str(tmp_path / "s.sock"))
    with pytest.raises(ValueError, match="not a request of the control protocol"):
        srv.register("shutdown", handler)
    srv.register("cleanup", handler)
    srv.register("stats", handler)
    assert srv.admin_ops == {"cleanup"}


def test_fields_of_the_wrong_type_are_usage_errors() -> None:
    req = {"wait": True, "aliases": "best", "type": None}
    with pytest.raises(UsageError, match="'wait'"):
        protocol.field(req, "wait", (int, float), 0)
    with pytest.raises(UsageError, match="'aliases'"):
        protocol.field(req, "aliases", list, [])
    assert protocol.field(req, "type", str) is None
    assert protocol.field(req, "inputs", list, []) == []


def test_a_refusal_is_raised_again_as_its_kind() -> None:
    reply = protocol.error_reply(errors.PermissionDenied("you may not write project p"))
    assert reply == {"ok": False, "error": "you may not write project p",
                     "kind": "PermissionDenied", "errno": 13}
    with pytest.raises(errors.PermissionDenied, match="project p"):
        protocol.raise_for(reply)
    for kind in ("SystemExit", "os", None):  # not an errors.py class: a plain error
        with pytest.raises(ArtifactfsError) as got:
            protocol.raise_for(protocol.refusal("no", 22, kind))
        assert type(got.value) is ArtifactfsError
    assert protocol.raise_for({"ok": True, "x": 1}) == {"ok": True, "x": 1}
    assert protocol.decode(protocol.encode(protocol.progress(5, 9))) == {"progress": 5, "total": 9}
