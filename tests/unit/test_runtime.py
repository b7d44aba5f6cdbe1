"""Runtime files, escaping and the control server's bounds (SPEC §9), without a mount."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from artifactfs.errors import Busy, PermissionDenied
from artifactfs.mount import registry, rundir
from artifactfs.mount.control import ControlServer, Peer, request
from artifactfs.safetext import SafeFormatter, escape

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")


def test_escape_shows_every_control_character() -> None:
    assert escape("plain/path é.txt") == "plain/path é.txt"
    assert escape("a\nb\r\t\x1b[2J\x7f\u202e\u2028\udcff") == \
        "a\\nb\\r\\t\\x1b[2J\\x7f\\u202e\\u2028\\xff"


def test_log_lines_can_not_be_forged() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    lg = logging.getLogger("artifactfs.test-forge")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.error("EIO: %s", "reference changed: file:///x\nINFO artifactfs.mount: root ok")
        try:
            raise ValueError("boom\nINFO artifactfs.mount: forged")
        except ValueError:
            lg.exception("failed")
    finally:
        lg.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "ERROR artifactfs.test-forge: EIO: reference changed: file:///x\\nINFO " \
                       "artifactfs.mount: root ok"
    assert not any(line.startswith("INFO") for line in lines)
    assert all(line.startswith("    | ") for line in lines[2:])


@needs_root
def test_runtime_directory_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = 54321
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert rundir.secure_dir(uid) is None  # nothing there yet: no mounts
    top = tmp_path / "artifactfs"
    (top / "mounts").mkdir(parents=True, mode=0o700)
    for d in (top, top / "mounts"):
        os.chown(d, uid, uid)
    assert rundir.secure_dir(uid) == str(top / "mounts")
    os.chown(top, 4242, 4242)  # someone else made it
    with pytest.raises(PermissionDenied, match=r"artifactfs: it belongs to uid 4242, not uid "):
        rundir.secure_dir(uid)
    os.chown(top, uid, uid)
    os.chmod(top / "mounts", 0o777)
    with pytest.raises(PermissionDenied, match=r"others may write it \(mode 0777\)"):
        rundir.secure_dir(uid)
    os.rename(top / "mounts", top / "real")
    os.symlink("real", top / "mounts")
    with pytest.raises(PermissionDenied, match="it is a symlink"):
        rundir.secure_dir(uid)
    os.chmod(tmp_path, 0o777)  # a base others may write, without the sticky bit
    with pytest.raises(PermissionDenied, match="not sticky"):
        rundir.secure_dir(uid)


def test_records_that_point_elsewhere_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "mounts"
    d.mkdir(mode=0o700)
    mp = "/mnt/x"
    mid = registry.mount_id(mp)
    doc = {"mountpoint": mp, "pid": os.getpid(), "store": "/s", "cache_dir": "/c",
           "control": str(d / f"{mid}.sock"), "log": str(d / f"{mid}.log")}
    (d / f"{mid}.json").write_text(json.dumps(doc))
    assert registry.load_record(str(d / f"{mid}.json")) is not None
    (d / f"{mid}.json").write_text(json.dumps({**doc, "control": "/tmp/evil.sock"}))
    with pytest.raises(PermissionDenied, match="not its own"):
        registry.load_record(str(d / f"{mid}.json"))
    assert registry.load_record(str(d / f"{mid}.json"), strict=False) is None
    other = registry.mount_id("/mnt/other")  # a record filed under another mount's id
    (d / f"{other}.json").write_text(json.dumps(doc))
    with pytest.raises(PermissionDenied):
        registry.load_record(str(d / f"{other}.json"))
    os.unlink(d / f"{mid}.json")
    (d / "elsewhere.json").write_text(json.dumps(doc))
    os.symlink("elsewhere.json", d / f"{mid}.json")
    with pytest.raises(PermissionDenied, match="symlink"):
        registry.load_record(str(d / f"{mid}.json"))
    if os.geteuid() == 0:
        os.unlink(d / f"{mid}.json")
        (d / f"{mid}.json").write_text(json.dumps(doc))
        os.chown(d / f"{mid}.json", 4242, 4242)
        with pytest.raises(PermissionDenied, match="belongs to uid 4242"):
            registry.load_record(str(d / f"{mid}.json"))


def test_a_log_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    log = tmp_path / "m.log"
    os.symlink(victim, log)
    fd = rundir.create_log(str(log))
    os.write(fd, b"daemon line\n")
    os.close(fd)
    assert victim.read_text() == "mine\n"
    assert os.path.islink(str(log) + ".1")  # the planted link was moved aside, not followed
    st = os.lstat(log)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert log.read_text() == "daemon line\n"


def test_a_client_talks_only_to_root_or_itself(users: Any) -> None:
    evil = users.make()
    top = tempfile.mkdtemp(prefix="afs-evil-", dir="/tmp")
    os.chmod(top, 0o777)
    path = os.path.join(top, "evil.sock")
    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.bind({path!r})\ns.listen(1)\nprint('ready', flush=True)\ns.settimeout(10)\n"
            "c, _ = s.accept()\nc.settimeout(2)\n"
            "print('GOT', c.recv(100), flush=True)\n")
    p = subprocess.Popen(["setpriv", f"--reuid={evil.pw_uid}", f"--regid={evil.pw_gid}",
                          "--init-groups", "--", *users.python_argv, "-c", code],
                         env=users.env(evil), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        with pytest.raises(PermissionDenied, match=f"runs as uid {evil.pw_uid}, neither root"):
            request(path, {"op": "commit", "metadata": {"secret": 1}})
        out, _ = p.communicate(timeout=20)
        assert "GOT b''" in out  # it saw a connection, never a byte of the request
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(top, ignore_errors=True)


def test_control_server_bounds_connections_per_uid_and_idle_ones(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")
    srv = ControlServer(path, per_uid=3, idle=0.3)

    async def whoami(req: dict[str, object], peer: Peer) -> dict[str, object]:
        return {"uid": peer.uid}

    srv.register("stats", whoami)
    srv.register("cleanup", whoami, admin=True)

    def client() -> None:
        held = []
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            held.append(s)
        time.sleep(0.1)
        with pytest.raises(Busy, match="too many control connections from uid"):
            request(path, {"op": "stats"})
        started = time.monotonic()
        for s in held:  # closed without a reply once idle too long
            s.settimeout(5)
            assert s.recv(100) == b""
            s.close()
        assert time.monotonic() - started < 2
        assert request(path, {"op": "stats"})["uid"] == os.geteuid()
        assert request(path, {"op": "cleanup"})["uid"] == os.geteuid()  # the daemon's user

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(srv.serve)
            await trio.to_thread.run_sync(client)
            n.cancel_scope.cancel()

    trio.run(main)
    assert srv.open == {}
