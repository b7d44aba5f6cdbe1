"""Lock files: the exact versions behind names that move, for runs that must read the same
bytes next month.

``artifactfs lock vision/cats:latest vision/model:best -o artifacts.lock`` writes::

    # artifactfs lock file: …
    version = 1

    [[pin]]
    artifact = "vision/cats"
    alias = "latest"
    version = 7
    digest = "9f2c…"          # the version's content digest (its root tree's)

Under a lock (``get --lock``, ``mount --lock``, or ``ARTIFACTFS_LOCK=FILE`` for every command
and the Python API) a pinned ``P/N:ALIAS`` resolves to its pinned version, and
``MOUNT/P/N/ALIAS`` is a symlink to it; names the lock does not pin resolve as usual.  A pin
whose version was deleted, or whose record's digest is not the pinned one, is an error
(:class:`LockBroken`; EIO in the mount), never other bytes.

What is subtle: the file is meant to be diffed and reviewed, so it is written in a fixed
order (artifact, then alias) with one pin per table, and read strictly: an unknown key, a
wrong type or a bad name is an error naming the file and the pin.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError, UsageError
from .names import Ref, check_alias, check_name, check_project

if TYPE_CHECKING:
    from .records import VersionRecord

FORMAT = 1
ENV = "ARTIFACTFS_LOCK"
_KEYS = {"artifact", "alias", "version", "digest"}


class LockBroken(IntegrityError):
    """A pinned version is gone or is not what was pinned."""


@dataclass(frozen=True)
class Pin:
    project: str
    name: str
    alias: str
    version: int
    digest: str

    @property
    def label(self) -> str:
        return f"{self.project}/{self.name}:{self.alias}"


class Lock:
    """The pins of one lock file."""

    def __init__(self, path: str, pins: Iterable[Pin]) -> None:
        self.path = path
        self.pins = {(p.project, p.name, p.alias): p for p in pins}

    @classmethod
    def load(cls, path: str) -> Lock:
        try:
            with open(path, "rb") as f:
                doc = tomllib.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"no such lock file: {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"invalid lock file {path}: {e}") from None
        if doc.get("version") != FORMAT or set(doc) - {"version", "pin"}:
            raise UsageError(f"invalid lock file {path}: expected version = {FORMAT} and "
                             "[[pin]] tables")
        pins = doc.get("pin", [])
        if not isinstance(pins, list):
            raise UsageError(f"invalid lock file {path}: pin must be [[pin]] tables")
        return cls(path, [_pin(path, i, p) for i, p in enumerate(pins, 1)])

    def pin(self, ref: Ref) -> Pin | None:
        """The pin for an alias ref (not a version, not a dated ref), if the lock has one."""
        if ref.version is not None or "@" in ref.ref:
            return None
        return self.pins.get((ref.project, ref.name, ref.ref))

    def of(self, project: str, name: str) -> list[Pin]:
        return [p for (pp, nn, _), p in sorted(self.pins.items()) if (pp, nn) == (project, name)]

    def check(self, pin: Pin, rec: VersionRecord | None) -> VersionRecord:
        """``rec`` (the pinned version's record, None when missing) if it is what was pinned."""
        where = f"{pin.label} is locked to v{pin.version} by {self.path}"
        if rec is None or rec.deleted_at is not None:
            raise LockBroken(f"{where}, but that version was deleted")
        if rec.digest != pin.digest:
            raise LockBroken(f"{where}, but that version's digest is not the locked one "
                             f"({rec.digest[:12]}… instead of {pin.digest[:12]}…)")
        return rec


def _pin(path: str, i: int, p: Any) -> Pin:
    where = f"invalid lock file {path}: pin {i}"
    if not isinstance(p, dict) or set(p) != _KEYS:
        raise UsageError(f"{where}: needs exactly the keys {', '.join(sorted(_KEYS))}")
    art, alias, version, digest = p["artifact"], p["alias"], p["version"], p["digest"]
    if not isinstance(art, str) or art.count("/") != 1:
        raise UsageError(f"{where}: artifact must be \"PROJECT/NAME\"")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise UsageError(f"{where}: version must be a number")
    if not isinstance(digest, str) or len(digest) != 64:
        raise UsageError(f"{where}: digest must be a SHA-256 hex digest")
    project, name = art.split("/")
    try:
        check_project(project)
        check_name(name, "artifact name")
        check_alias(alias)
    except Exception as e:
        raise UsageError(f"{where}: {e}") from None
    return Pin(project, name, alias, version, digest)


def from_env() -> Lock | None:
    """The lock named by ``ARTIFACTFS_LOCK``, if any."""
    path = os.environ.get(ENV)
    return Lock.load(path) if path else None


def pin_of(ref: Ref, rec: VersionRecord) -> Pin:
    """What ``lock`` records for a resolved alias ref."""
    if ref.version is not None or "@" in ref.ref:
        raise UsageError(f"{ref} already names one version: lock pins aliases such as latest")
    return Pin(rec.project, rec.name, ref.ref, rec.version, rec.digest)


def render(pins: Iterable[Pin]) -> str:
    """The lock file's text (strings written as TOML basic strings via JSON escaping)."""
    lines = ["# artifactfs lock file: exact versions behind moving names (artifactfs lock).",
             "# Read by `get --lock`, `mount --lock` and ARTIFACTFS_LOCK.", f"version = {FORMAT}"]
    for p in sorted(pins, key=lambda p: (p.project, p.name, p.alias)):
        lines += ["", "[[pin]]", f"artifact = {json.dumps(f'{p.project}/{p.name}')}",
                  f"alias = {json.dumps(p.alias)}", f"version = {p.version}",
                  f"digest = {json.dumps(p.digest)}"]
    return "\n".join(lines) + "\n"


def write(path: str, pins: Iterable[Pin]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(render(pins))
    os.replace(tmp, path)
