"""Real unprivileged users for tests that play several users of one node (SPEC §9).

* :class:`Users` (the ``users`` fixture): ``users.make(groups=[...])`` creates a real user in
  the user database (``useradd``, no home, no login shell) and ``users.group()`` a real group;
  everything made is removed in teardown, even when the test failed.  Names are random
  (``afs`` + 8 hex digits), so test runs on one machine never collide.
* :meth:`Users.run` runs a command as one of them: uid, primary gid and the supplementary
  groups of the user database (``setpriv --init-groups``), with no capability left.
* :func:`user_python` (the ``user_python`` session fixture): how to run Python with artifactfs
  and its dependencies importable *by any user*, wherever the checkout lives.  When the
  checkout, its virtualenv or the interpreter sit below a directory other users can not
  enter (a 0700 home), they are bind-mounted for the session under a world-readable
  temporary directory, and unmounted at its end.

Root is needed for all of it; tests that use these fixtures are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_IMPORTS = "import artifactfs.cli, click, trio, lmdb, pyfuse3, boto3"


@dataclass
class UserPython:
    """``argv`` runs the interpreter; ``env`` makes artifactfs importable for any user."""

    argv: list[str]
    env: dict[str, str]
    mounts: list[str] = field(default_factory=list)


def _probe(argv: list[str], env: dict[str, str]) -> bool:
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv,
                        "-c", _IMPORTS], env={**env, "PATH": os.environ.get("PATH", ""),
                                               "HOME": "/nonexistent"},
                       capture_output=True, text=True, timeout=60, check=False)
    return r.returncode == 0


def _bind(src: str, dst: str, mounts: list[str]) -> None:
    os.makedirs(dst, exist_ok=True)
    subprocess.run(["mount", "--bind", src, dst], check=True, capture_output=True)
    mounts.append(dst)


@contextlib.contextmanager
def user_python(shared: bool = False) -> Iterator[UserPython]:
    """A :class:`UserPython` for the session (see the module docstring); ``shared`` forces
    the bind mounts even where other users can reach the checkout (a test does, so the way a
    checkout under a private home works is proven on every machine)."""
    site = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    plain = UserPython([sys.executable], env)
    if not shared and _probe(plain.argv, plain.env):
        yield plain
        return
    top = tempfile.mkdtemp(prefix="afs-py-", dir="/tmp")
    os.chmod(top, 0o755)
    mounts: list[str] = []
    try:
        base = os.path.realpath(sys.base_prefix)
        exe = os.path.relpath(os.path.realpath(sys.executable), base)
        _bind(base, os.path.join(top, "base"), mounts)
        _bind(str(REPO), os.path.join(top, "src"), mounts)
        _bind(os.path.realpath(site), os.path.join(top, "site"), mounts)
        shared = UserPython([os.path.join(top, "base", exe)],
                            {**env, "PYTHONPATH": f"{top}/src{os.pathsep}{top}/site",
                             # a shared-library build finds its libpython there too
                             "LD_LIBRARY_PATH": os.path.join(top, "base", "lib")}, mounts)
        if not _probe(shared.argv, shared.env):
            raise RuntimeError("no way to run artifactfs as another user from this checkout")
        yield shared
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


class Users:
    """Real users and groups made for one test, removed afterwards."""

    def __init__(self, interp: UserPython) -> None:
        self.interp = interp
        self._users: list[str] = []
        self._groups: list[str] = []

    def group(self) -> str:
        name = "afs" + secrets.token_hex(4)
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        self._groups.append(name)
        return name

    def make(self, groups: Sequence[str] = ()) -> pwd.struct_passwd:
        name = "afs" + secrets.token_hex(4)
        cmd = ["useradd", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", "--user-group"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        subprocess.run([*cmd, name], check=True, capture_output=True)
        self._users.append(name)
        return pwd.getpwnam(name)

    def add_to(self, user: pwd.struct_passwd, group: str) -> None:
        subprocess.run(["gpasswd", "-a", user.pw_name, group], check=True, capture_output=True)

    def remove_from(self, user: pwd.struct_passwd, group: str) -> None:
        subprocess.run(["gpasswd", "-d", user.pw_name, group], check=True, capture_output=True)

    def env(self, user: pwd.struct_passwd, extra: dict[str, str] | None = None
            ) -> dict[str, str]:
        """A clean environment for ``user`` (no root variables leak into it)."""
        keep = {k: v for k, v in os.environ.items()
                if k.startswith(("AWS_", "ARTIFACTFS_S3_")) or k in ("PATH", "LANG", "TZ")}
        return {**keep, "HOME": "/nonexistent", "USER": user.pw_name,
                **self.interp.env, **(extra or {})}

    def run(self, user: pwd.struct_passwd, argv: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 60, cwd: str | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` as ``user`` (its groups from the user database, no capabilities)."""
        return subprocess.run(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
             "--inh-caps=-all", "--", *argv],
            env=self.env(user, env), capture_output=True, text=True, timeout=timeout,
            cwd=cwd or "/", input=input, check=False)

    def python(self, user: pwd.struct_passwd, code: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Python ``code`` as ``user``, with artifactfs importable."""
        return self.run(user, [*self.python_argv, "-c", code], env, timeout)

    def cli(self, user: pwd.struct_passwd, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``artifactfs ARGS`` as ``user``."""
        return self.run(user, [*self.python_argv, "-m", "artifactfs", *args], env, timeout)

    @property
    def python_argv(self) -> list[str]:
        return self.interp.argv

    def cleanup(self) -> None:
        for name in self._users:
            subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
            subprocess.run(["userdel", name], check=False, capture_output=True)
        for name in self._groups:
            with contextlib.suppress(KeyError):
                grp.getgrnam(name)
                subprocess.run(["groupdel", name], check=False, capture_output=True)
