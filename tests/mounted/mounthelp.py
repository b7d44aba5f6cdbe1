"""Helpers for mounted tests: a :class:`Mount` that starts a real daemon and always cleans up."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time

BIG = 20_000_000  # three 8 MiB chunks


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def mounted(mp: str) -> bool:
    mp = os.path.abspath(mp)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class Mount:
    def __init__(self, mountpoint: str, store: str, cache: str, env: dict[str, str]) -> None:
        self.mp = mountpoint
        self.store = store
        self.cache = cache
        self.env = env
        self.pid = 0
        os.makedirs(mountpoint, exist_ok=True)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "artifactfs", *args], env=self.env,
                              text=True, capture_output=True, timeout=timeout, check=False)

    def start(self, *extra: str) -> None:
        if "://" not in self.store:  # mount serves only a store that exists (docs/cli.md)
            os.makedirs(self.store, exist_ok=True)
        r = self.run("--store", self.store, "mount", self.mp, "--cache-dir", self.cache, *extra)
        assert r.returncode == 0, f"mount failed: {r.stdout}\n{r.stderr}"
        assert mounted(self.mp)
        self.pid = self.daemon_pid()

    def daemon_pid(self) -> int:
        from artifactfs.mount import registry

        rec = registry.read(self.mp)
        assert rec is not None, "no registry record for the mount"
        return rec.pid

    def path(self, *parts: str) -> str:
        return os.path.join(self.mp, *parts)

    def cleanup(self) -> None:
        """Whatever state the test left: unmounted, daemon gone."""
        if mounted(self.mp):
            with contextlib.suppress(Exception):
                self.run("unmount", self.mp, timeout=20)
        for cmd in (["fusermount3", "-u", "-z", self.mp], ["umount", "-l", self.mp]):
            if not mounted(self.mp):
                break
            subprocess.run(cmd, capture_output=True, check=False, timeout=20)
        if self.pid and pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(self.pid), 10, "daemon exit")
