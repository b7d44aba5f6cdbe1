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
        from artifactfs.fs import registry

        rec = registry.read(m.mp)
        m.pid = rec.pid if rec is not None else 0  # cleanup kills a daemon left in there
    if r.returncode == 9:
        pytest.skip(f"no overlay mount here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["hello", "1"]
