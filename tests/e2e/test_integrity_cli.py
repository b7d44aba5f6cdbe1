"""Integrity under faults through the command line (issue 11): gc against damage, damaged or
hostile records and trees, long names, huge directories."""

from __future__ import annotations

from pathlib import Path

from test_cli import fail, run


def put_tree(tmp_path: Path, store: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (src / "top.txt").write_text("top")
    run(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    return src


def test_gc_fails_and_deletes_nothing_when_a_live_tree_is_damaged(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = put_tree(tmp_path, store)
    (src / "top.txt").write_text("v1")
    run(store, "put", str(src), "--name", "p/a", "--type", "dataset")
    run(store, "delete", "p/a:v1")
    objects = sorted(p for p in (store / "objects").rglob("*") if p.is_file())
    victim = next(p for p in objects if p.read_bytes().startswith(b'{"e":[["a.txt"'))
    victim.unlink()
    p = run(store, "gc", "--grace", "0", "--force", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    digest = victim.parent.name + victim.name
    assert digest in p.stderr and "p/a:v0" in p.stderr and "deleted nothing" in p.stderr
    assert sorted(p for p in (store / "objects").rglob("*") if p.is_file()) == \
        [o for o in objects if o != victim]


def test_gc_with_a_short_grace_needs_force(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put_tree(tmp_path, store)
    err = fail(store, "gc", "--grace", "0.5", code=1)
    assert "--force" in err
    p = run(store, "gc", "--grace", "0", "--force")
    assert "warning: grace period 0 h" in p.stderr and "removed 0" in p.stdout
