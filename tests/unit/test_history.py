"""Alias history and dated refs (history.py, names.parse_when), without a mount."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from artifactfs import history
from artifactfs.errors import IntegrityError, InvalidName, NotFound
from artifactfs.names import Ref, parse_ref, parse_when
from artifactfs.repo import Repo
from artifactfs.store import LocalStore


def test_parse_when_and_dated_refs() -> None:
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("2026-11-01T12:00") == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert parse_when("2026-11-01T12:00:30.5+02:00") == \
        datetime(2026, 11, 1, 10, 0, 30, 500000, tzinfo=UTC)
    for bad in ("yesterday", "2026-13-01", "2026-11-01T25:00", "11/01/2026", ""):
        with pytest.raises(InvalidName):
            parse_when(bad)
    r = parse_ref("vision/cats:best@2026-11-01T12:00")
    assert (r.alias, r.at, r.version) == ("best", datetime(2026, 11, 1, 12, tzinfo=UTC), None)
    assert parse_ref("vision/cats:@2026-11-01").alias == "latest"
    assert parse_ref("vision/cats:best").at is None
    for bad in ("vision/cats:v3@2026-11-01", "vision/cats:best@soon", "vision/cats:b!@2026-11-01"):
        with pytest.raises(InvalidName):
            parse_ref(bad)


def _stamp() -> datetime:
    time.sleep(0.01)
    t = datetime.now(UTC)
    time.sleep(0.01)
    return t


def test_latest_and_aliases_at_a_time(tmp_path: Path) -> None:
    repo = Repo(LocalStore(str(tmp_path / "store")))
    src = tmp_path / "src"
    src.mkdir()
    before = _stamp()
    for i in range(3):
        (src / "f.txt").write_text(str(i))
        repo.put_path(str(src), "p", "a", "dataset")
    t2 = _stamp()  # latest = v2
    cat = repo.catalog
    cat.set_alias("p", "a", 0, "best")
    t_best0 = _stamp()
    cat.set_alias("p", "a", 2, "best")
    t_best2 = _stamp()
    cat.remove_alias("p", "a", "best")
    t_gone = _stamp()
    cat.set_alias("p", "a", 1, "best")

    def at(ref: str, when: datetime) -> int:
        return repo.resolve(Ref("p", "a", f"{ref}@{when.isoformat()}")).version

    assert at("latest", t2) == 2 and at("", t2) == 2 and at("best", t_best2) == 2
    cat.delete_version("p", "a", 2)
    now = _stamp()
    assert at("latest", now) == 1
    for ref, when in (("latest", t2), ("best", t_best2)):
        with pytest.raises(NotFound, match="has been deleted since"):
            at(ref, when)
    assert at("best", t_best0) == 0 and at("best", now) == 1
    with pytest.raises(NotFound, match="no version was"):
        at("best", t_gone)
    with pytest.raises(NotFound, match="no version was"):
        at("latest", before)
    with pytest.raises(NotFound, match="no version was"):
        at("best", t2)  # before the alias existed
    assert cat.aliases("p", "a") == {"best": 1}  # a removed alias keeps only its history
    with pytest.raises(NotFound):
        cat.remove_alias("p", "a", "gone")


def test_hostile_or_legacy_history_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"))
    prefix = history.history_prefix("p", "a", "best")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    legacy = {"version": 3}  # written before history was kept
    with pytest.raises(NotFound, match="no recorded history"):
        history.alias_at(store.get, prefix, legacy, when, "best")
    for link in ("../../../etc/passwd", "x" * 32 + ".json", 7):
        doc = {"version": 3, "at": "2026-06-01T00:00:00Z", "prev": link}
        with pytest.raises(IntegrityError):
            history.alias_at(store.get, prefix, doc, when, "best")
    body = json.dumps({"version": 2, "at": "2026-03-01T00:00:00Z", "prev": None}).encode()
    loop = {"version": 1, "at": "2026-05-01T00:00:00Z", "prev": "a" * 32 + ".json"}
    store.put_if_absent(prefix + "a" * 32 + ".json", json.dumps(loop).encode())
    with pytest.raises(IntegrityError, match="damaged history link"):
        history.alias_at(store.get, prefix, loop, when, "best")
    store.put_if_absent(prefix + "b" * 32 + ".json", body)
    doc = {"version": 3, "at": "2026-06-01T00:00:00Z", "prev": "b" * 32 + ".json"}
    assert history.alias_at(store.get, prefix, doc, datetime(2026, 4, 1, tzinfo=UTC), "b") == 2
