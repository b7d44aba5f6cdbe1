"""The command line, run as a real process: SPEC §5 scenarios and bad input (§10)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(store: Path, *args: str, ok: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, ARTIFACTFS_STORE=str(store), **(env or {}))
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, env=e, cwd=cwd, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def fail(store: Path, *args: str, code: int = 1) -> str:
    p = run(store, *args, ok=False)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return p.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "data" / "train.csv").write_text("a,b\n1,2\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024 + 17))
    (src / "link").symlink_to("run.sh")
    return src


def test_put_get_versions_ls_info(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    p = run(store, "put", str(tree), "--name", "vision/cats", "--type", "dataset",
            "--alias", "best", "--description", "cats", "--metadata", '{"n": 3}')
    assert p.stdout.strip().splitlines()[-1] == "vision/cats:v0"
    p = run(store, "put", str(tree), "--name", "vision/cats", "--type", "dataset")
    assert p.stdout.strip().splitlines()[-1] == "vision/cats:v0"  # unchanged
    (tree / "data" / "new.csv").write_text("x")
    p = run(store, "put", str(tree), "--name", "vision/cats", "--type", "dataset")
    assert p.stdout.strip().splitlines()[-1] == "vision/cats:v1"

    vs = json.loads(run(store, "versions", "vision/cats", "--json").stdout)
    assert [v["version"] for v in vs] == [0, 1]
    assert vs[0]["aliases"] == ["best"] and vs[1]["aliases"] == ["latest"]
    info = json.loads(run(store, "info", "vision/cats:best", "--json").stdout)
    for k in ("project", "name", "type", "version", "digest", "aliases", "description",
              "metadata", "size", "file_count", "created_at"):
        assert k in info
    assert info["metadata"] == {"n": 3} and info["description"] == "cats"
    assert info["file_count"] == 4  # train.csv, run.sh, big.bin, link (an empty dir is no file)
    ls = json.loads(run(store, "ls", "vision/cats:v0", "--json").stdout)
    assert {d["path"] for d in ls} == {"big.bin", "data/train.csv", "empty/", "link", "run.sh"}
    assert all({"path", "size", "digest"} <= set(d) for d in ls)

    p = run(store, "get", "vision/cats:v0", cwd=tmp_path)
    root = Path(p.stdout.strip().splitlines()[-1])
    assert root == tmp_path / "artifacts" / "cats:v0"
    for f in ("data/train.csv", "run.sh", "big.bin"):
        assert sha(root / f) == sha(tree / f)
    assert os.access(root / "run.sh", os.X_OK)
    assert os.readlink(root / "link") == "run.sh"
    assert (root / "empty").is_dir()

    out = tmp_path / "part"
    run(store, "get", "vision/cats", "--root", str(out), "--path-prefix", "data/")
    assert sorted(p.name for p in (out / "data").iterdir()) == ["new.csv", "train.csv"]
    assert not (out / "big.bin").exists()


def test_aliases_and_delete(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    run(store, "put", str(tree), "--name", "p/a", "--type", "model")
    (tree / "x").write_text("x")
    run(store, "put", str(tree), "--name", "p/a", "--type", "model")
    run(store, "alias", "add", "p/a:v0", "prod")
    assert json.loads(run(store, "info", "p/a:prod", "--json").stdout)["version"] == 0
    fail(store, "alias", "add", "p/a:v0", "v3")
    fail(store, "delete", "p/a:v0")  # holds prod
    run(store, "alias", "rm", "p/a", "prod")
    fail(store, "alias", "rm", "p/a", "prod")
    run(store, "delete", "p/a:v1")
    assert json.loads(run(store, "info", "p/a", "--json").stdout)["version"] == 0
    fail(store, "info", "p/a:v1")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    run(store, "put", str(tree), "--name", "vision/cats", "--type", "dataset")
    before = sorted(str(p) for p in store.rglob("*") if ".tmp" not in p.parts)
    assert "type" in fail(store, "put", str(tree), "--name", "vision/cats", "--type", "model")
    assert "'bad name'" in fail(store, "put", str(tree), "--name", "vision/bad name", "--type", "x")
    fail(store, "put", str(tree), "--name", "drafts/x", "--type", "dataset")
    fail(store, "put", str(tree), "--name", "../x", "--type", "dataset")
    fail(store, "put", str(tree), "--name", "vision/x", "--type", "dataset", "--metadata", "{bad")
    fail(store, "put", str(tree), "--name", "vision/x", "--type", "dataset", "--alias", "v2")
    fail(store, "put", str(tmp_path / "missing"), "--name", "vision/x", "--type", "dataset")
    fail(store, "put", str(tree), "--name", "vision/x", "--type", "dataset",
         "--path-name", "../escape")
    fail(store, "info", "vision/cats:v7")
    fail(store, "info", "vision/cats:nosuchalias")
    fail(store, "info", "vision/nothing")
    fail(store, "ls", "not-a-ref")
    fail(store, "put", code=2)  # usage error
    after = sorted(str(p) for p in store.rglob("*") if ".tmp" not in p.parts)
    assert before == after


def test_get_never_writes_outside_root(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    run(store, "put", str(tree), "--name", "p/a", "--type", "dataset")
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").symlink_to(tmp_path / "elsewhere")  # a trap left in the root
    (tmp_path / "elsewhere").mkdir()
    fail(store, "get", "p/a", "--root", str(root))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_store_flag_env_and_config_file(tmp_path: Path, tree: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'store = "{tmp_path / "from-config"}"\n')
    env = dict(os.environ)
    env.pop("ARTIFACTFS_STORE", None)
    p = subprocess.run([sys.executable, "-m", "artifactfs", "--config", str(cfg), "put", str(tree),
                        "--name", "p/a", "--type", "dataset"], env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "from-config" / "artifacts" / "p" / "a").is_dir()
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["HOME"] = str(tmp_path / "home")
    p = subprocess.run([sys.executable, "-m", "artifactfs", "put", str(tree), "--name", "p/a",
                        "--type", "dataset"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "xdg" / "artifactfs" / "store" / "artifacts" / "p" / "a").is_dir()


def test_killed_put_leaves_no_version_and_the_next_put_works(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    env = dict(os.environ, ARTIFACTFS_STORE=str(store))
    for delay in (0.3, 0.8):
        p = subprocess.Popen([sys.executable, "-m", "artifactfs", "put", str(src), "--name",
                              "p/killed", "--type", "dataset"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(delay)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode == 0:
            continue  # this machine was too quick; the next attempt kills later
        v = run(store, "versions", "p/killed", "--json", ok=False)
        if v.returncode == 0 and json.loads(v.stdout):
            # killed after the version was durable, before the process exited: the version
            # must then be whole
            got = Path(run(store, "get", "p/killed:v0", "--root",
                           str(tmp_path / f"early{delay}")).stdout.strip())
            assert all(sha(got / f"f{i}.bin") == sha(src / f"f{i}.bin") for i in range(6))
            continue
        assert v.returncode == 1 or json.loads(v.stdout) == []  # no partial version
    out = run(store, "put", str(src), "--name", "p/killed", "--type", "dataset")
    assert out.stdout.strip().splitlines()[-1] == "p/killed:v0"
    got = Path(run(store, "get", "p/killed", "--root", str(tmp_path / "got")).stdout.strip())
    for i in range(6):
        assert sha(got / f"f{i}.bin") == sha(src / f"f{i}.bin")


def test_file_references_put_ls_get_and_change(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tmp_path / "nfs"
    src.mkdir()
    (src / "a.txt").write_text("one")
    (src / "b.txt").write_text("two")
    p = run(store, "put", f"file://{src}", "--name", "p/refs", "--type", "dataset",
            "--path-name", "raw")
    assert p.stdout.strip().splitlines()[-1] == "p/refs:v0"
    ls = json.loads(run(store, "ls", "p/refs", "--json").stdout)
    assert [(d["path"], d["ref"]) for d in ls] == [("raw/a.txt", f"file://{src}/a.txt"),
                                                 ("raw/b.txt", f"file://{src}/b.txt")]
    got = Path(run(store, "get", "p/refs", "--root", str(tmp_path / "got")).stdout.strip())
    assert (got / "raw" / "a.txt").read_text() == "one"
    (src / "a.txt").write_text("ONE")
    err = fail(store, "get", "p/refs", "--root", str(tmp_path / "again"))
    assert f"reference changed since it was logged: file://{src}/a.txt" in err
    assert not (tmp_path / "again" / "raw" / "a.txt").exists()
    assert "max_objects" in fail(store, "put", f"file://{src}", "--name", "p/r2", "--type",
                                 "dataset", "--max-objects", "1")


def test_an_unknown_command_is_a_usage_error_and_mounts_nothing(tmp_path: Path) -> None:
    """A typo followed by a directory was once read as the fstab form STORE MOUNT and mounted
    a new empty store over the directory: now it is a usage error naming close commands."""
    store = tmp_path / "store"
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "mine.txt").write_text("mine")
    p = run(store, "frobnicate", "dl", ok=False, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr == \
        "error: no such command 'frobnicate' (artifactfs --help)\n"
    assert not os.path.ismount(dl) and (dl / "mine.txt").read_text() == "mine"
    assert not os.path.exists("/frobnicate") and not store.exists()
    assert "did you mean versions" in fail(store, "verison", "p/a", code=2)
    err = fail(store, str(tmp_path / "store"), str(dl), "-o", "allow_other", code=2)
    assert "fuse.artifactfs need mount.fuse.artifactfs" in err
    assert not os.path.ismount(dl)


def test_usage_errors_are_one_line_naming_the_help(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    assert fail(store, "ls", code=2) == "error: missing argument [PROJECT/]NAME[:REF] (artifactfs ls --help)\n"
    assert fail(store, "gc", "--grace", "soon", code=2) == \
        "error: invalid value for --grace: 'soon' is not a valid float (artifactfs gc --help)\n"
    assert fail(store, "versions", "p/a", "--jsn", code=2) == \
        "error: no such option --jsn; did you mean --json? (artifactfs versions --help)\n"
    assert fail(store, "alias", "add", "p/a:v0", code=2) == \
        "error: missing argument ALIAS (artifactfs alias add --help)\n"
    assert "Usage:" in run(store, "alias").stdout  # a bare group shows its help
    assert "Usage:" in run(store).stdout


def test_lineage_ttl_and_gc_commands(tmp_path: Path, tree: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import artifactfs
    store = tmp_path / "store"
    monkeypatch.setenv("ARTIFACTFS_STORE", str(store))
    prep = artifactfs.init(project="p", job_type="prep")
    data = artifactfs.Artifact("data", type="dataset")
    data.add_dir(str(tree))
    prep.log_artifact(data)
    train = artifactfs.init(project="p", job_type="train")
    train.use_artifact("data:latest")
    model = artifactfs.Artifact("model", type="model")
    with model.new_file("w.bin", mode="wb") as f:
        f.write(b"weights")
    train.log_artifact(model)

    doc = json.loads(run(store, "lineage", "p/data", "--format", "json").stdout)
    assert doc["logged_by"]["run"] == f"p/{prep.id}"
    assert doc["used_by"][0]["run"] == f"p/{train.id}"
    assert doc["used_by"][0]["outputs"] == ["p/model:v0"]
    dot = run(store, "lineage", "p/model", "--format", "dot").stdout
    assert '"p/data:v0" -> ' in dot and f'"run:p/{train.id}" -> "p/model:v0"' in dot
    assert run(store, "lineage", "p/model").stdout.strip().splitlines()[-1] == "p/model:v0"

    run(store, "ttl", "set", "p/data:v0", "30")
    assert json.loads(run(store, "info", "p/data", "--json").stdout)["ttl_days"] == 30
    fail(store, "ttl", "set", "p/data:v0", "0")
    fail(store, "ttl", "set", "p/data:v0", "soon")
    run(store, "ttl", "set-default", "p", "7")
    run(store, "ttl", "clear", "p/data:v0")
    run(store, "ttl", "clear", "p")
    out = run(store, "gc", "--dry-run").stdout
    assert "would remove 0" in out


def test_put_again_reuses_settled_files_and_rehash_reads_all(tmp_path: Path, tree: Path) -> None:
    """The CLI keeps its digest hints in the cache directory; --rehash ignores them."""
    store, cache = tmp_path / "store", tmp_path / "cache"
    env = {"ARTIFACTFS_CACHE_DIR": str(cache)}
    assert run(store, "put", str(tree), "--name", "p/a", "--type", "d", env=env).stdout \
        .strip() == "p/a:v0"
    assert (cache / "put-hints.db").exists()
    r = run(store, "put", str(tree), "--name", "p/a", "--type", "d", env=env)
    assert r.stdout.strip() == "p/a:v0" and "unchanged" in r.stderr
    r = run(store, "put", str(tree), "--name", "p/a", "--type", "d", "--rehash", env=env)
    assert r.stdout.strip() == "p/a:v0" and "unchanged" in r.stderr
    (tree / "data" / "train.csv").write_text("a,b\n3,4\n")
    assert run(store, "put", str(tree), "--name", "p/a", "--type", "d", env=env).stdout \
        .strip() == "p/a:v1"
    got = tmp_path / "got"
    run(store, "get", "p/a:v1", "--root", str(got))
    assert (got / "data" / "train.csv").read_text() == "a,b\n3,4\n"
