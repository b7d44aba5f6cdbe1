"""The command line for scripts and shells: ``--json`` shapes as docs/cli.md documents them,
``put`` defaults like ``wandb artifact put``, the default project, and shell completion of
artifact names and versions read from the store (bounded when the store does not answer)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clidocs import check_json, json_shapes


def run(store: Path | str, *args: str, cwd: Path | None = None,
        env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTFS_")}
    e.update(ARTIFACTFS_STORE=str(store), XDG_CONFIG_HOME=str(Path(store).parent / "config"))
    p = subprocess.run([sys.executable, "-m", "artifactfs", *args], capture_output=True,
                       text=True, env={**e, **(env or {})}, cwd=cwd, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def js(store: Path, command: str, *args: str) -> Any:
    """``artifactfs COMMAND ARGS --json``, checked against docs/cli.md's table."""
    doc = json.loads(run(store, *command.split(), *args, "--json").stdout)
    check_json(command, doc)
    return doc


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "my-data"
    d.mkdir()
    (d / "a.txt").write_text("a")
    (d / "link").symlink_to("a.txt")
    return d


def test_every_documented_json_shape_of_the_store_commands(tmp_path: Path, src: Path) -> None:
    store = tmp_path / "store"
    doc = js(store, "put", str(src), "-n", "p/a", "-a", "best")
    assert doc["ref"] == "p/a:v0" and doc["created"] is True and doc["aliases"] == ["latest", "best"]
    assert js(store, "put", str(src), "-n", "p/a")["created"] is False
    (src / "b.txt").write_text("b")
    assert js(store, "put", str(src), "-n", "p/a")["version"] == 1
    assert js(store, "info", "p/a:best")["version"] == 0
    assert [v["ref"] for v in js(store, "versions", "p/a")] == ["p/a:v0", "p/a:v1"]
    ls = js(store, "ls", "p/a:v1")
    assert {d["path"]: d.get("target") for d in ls} == {"a.txt": None, "b.txt": None,
                                                       "link": "a.txt"}
    got = js(store, "get", "p/a:v0", "--root", str(tmp_path / "got"))
    moved = got.pop("fetched_bytes") + got.pop("copied_bytes")  # copied: a local copy known
    assert moved == 1 and got == {"ref": "p/a:v0", "root": str(tmp_path / "got"), "files": 2,
                                  "kept_bytes": 0, "kept_files": 0}
    assert js(store, "alias add", "p/a:v1", "prod") == \
        {"artifact": "p/a", "alias": "prod", "version": 1}
    assert js(store, "alias rm", "p/a", "prod") == \
        {"artifact": "p/a", "alias": "prod", "version": None}
    assert js(store, "ttl set", "p/a:v1", "30") == {"artifact": "p/a:v1", "ttl_days": 30}
    assert js(store, "ttl clear", "p/a:v1") == {"artifact": "p/a:v1", "ttl_days": None}
    assert js(store, "ttl set-default", "p", "7") == {"project": "p", "ttl_days": 7}
    assert js(store, "ttl clear", "p") == {"project": "p", "ttl_days": None}
    assert js(store, "delete", "p/a:v1") == {"artifact": "p/a:v1", "deleted": 1}
    gc = js(store, "gc", "--dry-run", "--grace", "0", "--force")
    assert gc["dry_run"] is True and gc["deleted"] > 0 and gc["problems"] == []
    assert js(store, "delete", "p/a", "--delete-aliases") == {"artifact": "p/a", "deleted": 1}
    cache = tmp_path / "cache"
    (cache / "blobs" / "ab").mkdir(parents=True)
    (cache / "blobs" / "ab" / "x").write_bytes(b"x" * 100)
    assert js(store, "cache info", "--cache-dir", str(cache)) == [
        {"cache_dir": str(cache), "bytes": 100, "files": 1, "max_bytes": 20 * 2**30,
         "mounts": []}]
    assert js(store, "cache cleanup", "0", "--cache-dir", str(cache))[0]["bytes"] == 0
    shapes = json_shapes()
    tested_here = {"put", "info", "versions", "ls", "get", "alias add", "alias rm", "ttl set",
                   "ttl clear", "ttl set-default", "delete", "gc", "cache info", "cache cleanup"}
    mounted = {"mount", "status", "draft create", "draft list", "draft discard", "commit",
               "upsert"}  # tests/mounted/test_cli_mount.py
    inspecting = {"verify", "diff", "digest", "search", "tag add", "tag rm", "link",
                  "unlink"}  # tests/e2e/test_cli_inspect.py
    assert set(shapes) == tested_here | mounted | inspecting


def test_put_defaults_like_wandb_artifact_put(tmp_path: Path, src: Path) -> None:
    store = tmp_path / "store"
    doc = js(store, "put", str(src))
    assert (doc["ref"], doc["type"]) == ("uncategorized/my-data:v0", "dataset")
    p = run(store, "put", "my-data", "-n", "cats", "-t", "model", "-a", "best", "-d", "hi",
            "--json", cwd=tmp_path)
    doc = json.loads(p.stdout)
    assert (doc["ref"], doc["type"], doc["aliases"], doc["description"]) == \
        ("uncategorized/cats:v0", "model", ["latest", "best"], "hi")
    assert run(store, "get", "cats:best", "--root", "out", cwd=tmp_path).stdout.strip() == \
        str(tmp_path / "out")
    p = run(store, "put", str(src), env={"ARTIFACTFS_PROJECT": "vision"})
    assert p.stdout.strip() == "vision/my-data:v0"
    cfg = tmp_path / "config" / "artifactfs" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('project = "team"\n')
    assert run(store, "put", str(src)).stdout.strip() == "team/my-data:v0"
    assert run(store, "versions", "my-data").stdout.startswith("v0")
    assert run(store, "put", f"file://{src}/").stdout.strip() == "team/my-data:v1"  # refs
    bad = tmp_path / "bad name"
    bad.mkdir()
    p = run(store, "put", str(bad), ok=False)
    assert p.returncode == 1 and "pass --name" in p.stderr and "'bad name'" in p.stderr
    cfg.write_text('project = "no/pe"\n')
    p = run(store, "put", str(src), ok=False)  # the config file is refused, naming the line
    assert p.returncode == 1 and f"config file {cfg}, line 1: project: invalid project name " \
        "'no/pe'" in p.stderr, p.stderr


def complete(store: str, line: str, env: dict[str, str] | None = None
             ) -> tuple[list[str], float]:
    """What ``artifactfs``'s bash completion offers for ``line`` (cursor at its end)."""
    t = time.monotonic()
    p = run(store, env={"_ARTIFACTFS_COMPLETE": "bash_complete", "COMP_LINE": line,
                        "COMP_POINT": str(len(line)), **(env or {})})
    return [x.partition(",")[2] for x in p.stdout.splitlines() if x], time.monotonic() - t


def test_completion_of_artifact_names_and_versions(tmp_path: Path, src: Path) -> None:
    store = tmp_path / "store"
    for name in ("vision/cats", "vision/dogs", "audio/birds", "cats"):
        run(store, "put", str(src), "-n", name)
    run(store, "alias", "add", "vision/cats:v0", "best")
    s = str(store)
    assert complete(s, "artifactfs vers")[0] == ["versions"]
    assert complete(s, "artifactfs get ")[0] == ["audio/", "uncategorized/", "vision/", "cats"]
    assert complete(s, "artifactfs get vi")[0] == ["vision/cats", "vision/dogs"]  # one project
    assert complete(s, "artifactfs info vision/d")[0] == ["vision/dogs"]
    # bash replaces only what follows the last ':' of the word
    assert complete(s, "artifactfs get vision/cats:")[0] == ["v0", "latest", "best"]
    assert complete(s, "artifactfs --store " + s + " ls vision/cats:b")[0] == ["best"]
    assert complete(s, "artifactfs versions cats:")[0] == []  # a name, no version
    assert complete(s, "artifactfs draft create ca")[0] == ["cats"]
    assert complete(s, "artifactfs get nosuch/")[0] == []
    assert complete(str(tmp_path / "nostore"), "artifactfs get ")[0] == []


def test_completion_gives_up_on_a_store_that_does_not_answer(tmp_path: Path) -> None:
    """An S3 endpoint that accepts connections and never answers: completion returns nothing
    within its bound instead of hanging the shell."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
               "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
               "ARTIFACTFS_COMPLETE_SECONDS": "1"}
        found, took = complete("s3://bucket/prefix", "artifactfs get ", env)
        assert found == [] and took < 8, took
    finally:
        silent.close()


def test_completion_scripts_for_three_shells(tmp_path: Path, src: Path) -> None:
    store = tmp_path / "store"
    run(store, "put", str(src), "-n", "vision/cats")
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef"),
                          ("fish", "complete --no-files --command artifactfs")):
        assert marker in run(store, "completion", shell).stdout, shell
    # the bash script, sourced in a real bash, completes a P/N:REF word split at ':'
    script = run(store, "completion", "bash").stdout
    line = "artifactfs get vision/cats:la"
    bash = (f"{script}\nCOMP_LINE='{line}'; COMP_POINT={len(line)}; "
            "COMP_WORDS=(artifactfs get vision/cats : la); COMP_CWORD=4; "
            "_artifactfs_completion artifactfs; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "ARTIFACTFS_STORE": str(store),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(["bash", "--norc", "-c", bash], capture_output=True, text=True, env=env,
                       timeout=30)
    assert p.stdout.split() == ["latest"], p.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")
def test_fish_completes_versions_from_the_store(tmp_path: Path, src: Path) -> None:
    store = tmp_path / "store"
    run(store, "put", str(src), "-n", "vision/cats", "-a", "best")
    env = {**os.environ, "ARTIFACTFS_STORE": str(store),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(["fish", "--no-config", "-c", "artifactfs completion fish | source; "
                        "complete -C'artifactfs get vision/cats:'"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.stdout.split() == ["vision/cats:best", "vision/cats:latest", "vision/cats:v0"], \
        p.stderr
