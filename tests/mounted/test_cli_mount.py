"""``artifactfs mount`` as a new user meets it (issue: no surprise mounts, paths as meant):
relative paths mean the caller's directory, a store that does not exist is not made up, a
missing mountpoint is created when its parent is the caller's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mounthelp import Mount, mounted


def run(env: dict[str, str], *args: str, cwd: Path | str = "/"
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifactfs", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_relative_store_cache_and_config_mean_the_callers_directory(
        mounter: Callable[..., Mount], source: str, env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in env.items() if k != "ARTIFACTFS_STORE"}
    work = tmp_path / "work"
    work.mkdir()
    r = run(env, "--store", "rel/store", "put", source, "--name", "p/a", "--type", "dataset", cwd=work)
    assert r.returncode == 0, r.stderr
    m = mounter("mnt", start=False)
    r = run(env, "--store", "rel/store", "mount", "../mnt", "--cache-dir", "rel/cache", cwd=work)
    assert r.returncode == 0, r.stderr
    m.pid = m.daemon_pid()
    status = {s["mountpoint"]: s for s in json.loads(run(env, "status", "--json").stdout)}
    assert status[m.mp]["store"] == str(work / "rel" / "store")
    assert status[m.mp]["cache_dir"] == str(work / "rel" / "cache")
    assert Path(m.path("p", "a", "v0", "README")).read_text() == "hello\n"
    draft = Path(m.path("drafts", "p", "a", "d"))
    draft.mkdir()
    (draft / "new.txt").write_text("new\n")
    r = run(env, "commit", "d", cwd=draft.parent)  # a relative draft path too
    assert r.returncode == 0 and r.stdout.split()[-1] == "p/a:v1", r.stderr
    vs = json.loads(run(env, "--store", str(work / "rel" / "store"), "versions", "p/a",
                        "--json").stdout)
    assert [v["version"] for v in vs] == [0, 1]
    assert not os.path.exists("/rel")
    # a config file's relative store is relative to the file
    (work / "conf").mkdir()
    (work / "conf" / "c.toml").write_text('store = "cstore"\n')
    r = run(env, "--config", "conf/c.toml", "put", source, "--name", "p/c", "--type", "dataset", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "conf" / "cstore" / "artifacts" / "p" / "c").is_dir()


def test_a_store_that_does_not_exist_is_not_mounted(
        mounter: Callable[..., Mount], env: dict[str, str], tmp_path: Path) -> None:
    m = mounter("mnt", start=False)
    err = one_line_error(run(env, "--store", "nosuch", "mount", m.mp, cwd=tmp_path))
    assert f"store {tmp_path / 'nosuch'} does not exist" in err
    assert not (tmp_path / "nosuch").exists() and not mounted(m.mp)
    err = one_line_error(run(env, "--store", "nosuch", "versions", "p/a", cwd=tmp_path))
    assert "does not exist" in err and not (tmp_path / "nosuch").exists()
    helper = os.path.join(os.path.dirname(sys.executable), "mount.artifactfs")
    r = subprocess.run([helper, str(tmp_path / "nosuch"), m.mp, "-o", "_netdev"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "nosuch").exists() and not mounted(m.mp)


def test_a_missing_mountpoint_is_created_when_its_parent_is_yours(
        mounter: Callable[..., Mount], env: dict[str, str], tmp_path: Path) -> None:
    # the default store, which does not exist yet, is made on first use
    env = {**{k: v for k, v in env.items() if k != "ARTIFACTFS_STORE"},
           "XDG_DATA_HOME": str(tmp_path / "xdg")}
    m: Any = mounter("fresh", start=False)
    os.rmdir(m.mp)
    r = run(env, "mount", "fresh", "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m.pid = m.daemon_pid()
    assert r.stderr.strip() == f"created mountpoint {m.mp}"
    assert mounted(m.mp) and os.listdir(m.mp) == ["drafts"]
    assert (tmp_path / "xdg" / "artifactfs" / "store").is_dir()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    err = one_line_error(run(env, "mount", str(theirs / "mnt"), cwd=tmp_path))
    assert "is not yours" in err and not (theirs / "mnt").exists()
    err = one_line_error(run(env, "mount", str(tmp_path / "no" / "mnt"), cwd=tmp_path))
    assert "nor does" in err and not (tmp_path / "no").exists()


def test_an_fstab_line_mounts_through_the_installed_helper(
        mounter: Callable[..., Mount], source: str, env: dict[str, str], cli: Any,
        tmp_path: Path) -> None:
    """``mount -t fuse.artifactfs`` (what an fstab line does) runs /sbin/mount.fuse.artifactfs,
    the symlink systemd/install-mount-helper.sh makes.  The symlink is added in a private
    mount namespace (an overlay on /usr/sbin), so the machine's /sbin is never touched."""
    cli("put", source, "--name", "p/a", "--type", "dataset")
    m = mounter("fstab", start=False)
    up, work = tmp_path / "up", tmp_path / "work"
    up.mkdir()
    work.mkdir()
    sbin = os.path.realpath("/sbin")
    os.symlink(os.path.join(os.path.dirname(sys.executable), "mount.artifactfs"),
               up / "mount.fuse.artifactfs")
    script = f"""
        mount -t overlay overlay -o lowerdir={sbin},upperdir={up},workdir={work} {sbin} || exit 9
        mount -t fuse.artifactfs {env['ARTIFACTFS_STORE']} {m.mp} \\
            -o _netdev,allow_other,nofail,x-systemd.automount,cache_dir={tmp_path / 'c'} || exit 1
        cat {m.mp}/p/a/v0/README
        grep -c " {m.mp} .* fuse.artifactfs " /proc/self/mountinfo
        {sys.executable} -m artifactfs unmount {m.mp}
    """
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        from artifactfs.mount import registry

        rec = registry.read(m.mp)
        m.pid = rec.pid if rec is not None else 0  # cleanup kills a daemon left in there
    if r.returncode == 9:
        pytest.skip(f"no overlay mount here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["hello", "1"]


def js(env: dict[str, str], command: str, *args: str, cwd: Path | str = "/") -> Any:
    """``artifactfs COMMAND ARGS --json``, checked against docs/cli.md's table."""
    from clidocs import check_json

    r = run(env, *command.split(), *args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    check_json(command, doc)
    return doc


def test_json_of_mount_status_drafts_commit_and_upsert(
        mounter: Callable[..., Mount], source: str, env: dict[str, str], cli: Any,
        tmp_path: Path) -> None:
    cli("put", source, "-n", "p/a")
    m = mounter("mnt", start=False)
    doc = js(env, "mount", m.mp, "--cache-dir", str(tmp_path / "c"))
    m.pid = doc["pid"]
    assert doc["mountpoint"] == m.mp and doc["store"] == env["ARTIFACTFS_STORE"]
    assert m.mp in [s["mountpoint"] for s in js(env, "status")]
    d = js(env, "draft create", "p/a:v0", "--id", "one", "--mount", m.mp)
    assert d["path"] == m.path("drafts", "p", "a", "one") and d["base"] == "p/a:v0"
    assert (d["project"], d["name"], d["id"], d["owner"]) == ("p", "a", "one", 0)
    rows = js(env, "draft list", "--mount", m.mp)
    assert [r["path"] for r in rows] == [d["path"]]
    Path(d["path"], "new.txt").write_text("new")
    c = js(env, "commit", d["path"])
    assert (c["ref"], c["project"], c["name"], c["version"], c["created"],
            c["distributed"]) == ("p/a:v1", "p", "a", 1, True, False)
    assert c["digest"] == js(env, "info", "p/a:v1")["digest"]
    two = js(env, "draft create", "p/a", "--id", "two", "--mount", m.mp)["path"]
    assert js(env, "draft discard", two) == {"discarded": two}
    three = js(env, "draft create", "p/a", "--id", "three", "--mount", m.mp)["path"]
    Path(three, "more.txt").write_text("more")
    u = js(env, "upsert", three)
    assert u["draft"] == three and u["entries"] >= 1 and isinstance(u["writer"], str)


@pytest.mark.s3
def test_cache_info_and_cleanup_find_the_caches_of_running_mounts(
        mounter: Callable[..., Mount], source: str, env: dict[str, str], s3_store_uri: str,
        tmp_path: Path) -> None:
    """A mount started with --cache-dir C: ``cache info`` finds C through the registry (not
    only the configured cache), and ``cache cleanup`` has that daemon evict."""
    env = {**env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
           "ARTIFACTFS_STORE": s3_store_uri, "ARTIFACTFS_CACHE_DIR": str(tmp_path / "conf")}
    assert run(env, "put", source, "-n", "p/a").returncode == 0
    m = mounter("mnt", start=False)
    cache = tmp_path / "mine"
    r = run(env, "mount", m.mp, "--cache-dir", str(cache), "--cache-size", "1GiB")
    assert r.returncode == 0, r.stderr
    m.pid = m.daemon_pid()
    Path(m.path("p", "a", "v0", "big.bin")).read_bytes()
    caches = {c["cache_dir"]: c for c in js(env, "cache info")}
    assert str(cache) in caches, caches
    mine = caches[str(cache)]
    assert mine["mounts"] == [m.mp] and mine["max_bytes"] == 2**30 and mine["bytes"] > 0
    text = run(env, "cache", "info").stdout
    assert f"{cache}: " in text and f"used by {m.mp}" in text
    # (with --cache-dir: without, every running mount of this node would evict, other
    # tests' too)
    after = {c["cache_dir"]: c for c in js(env, "cache cleanup", "0", "--cache-dir", str(cache))}
    left = [(p, p.stat().st_size) for p in (cache / "blobs").rglob("*") if p.is_file()]
    assert after[str(cache)]["bytes"] == 0, left
    assert Path(m.path("p", "a", "v0", "README")).read_text() == "hello\n"  # still serves


def test_the_readme_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    """The README's walkthrough, block by block as written, in a temporary home with the
    default store: setup is done, so ``artifactfs`` is the one on PATH."""
    from clidocs import readme_walkthrough

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ARTIFACTFS_", "XDG_", "NOTIFY_SOCKET"))}
    env.update(HOME=str(home), PATH=f"{os.path.dirname(sys.executable)}:{env['PATH']}")
    mp = str(home / "artifacts")
    try:
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", readme_walkthrough()],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        from artifactfs.mount import registry

        rec = registry.read(mp)
        m = Mount(mp, "", "", env)
        m.pid = rec.pid if rec is not None else 0
        m.cleanup()
    assert not mounted(mp)
    got = (work / "artifacts" / "cats:v1" / "train.csv").read_text()
    assert got == "name,label\ntom,cat\nfelix,cat\n"
    assert (home / ".local" / "share" / "artifactfs" / "store" / "artifacts").is_dir()
