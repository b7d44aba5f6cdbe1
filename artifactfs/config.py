"""Configuration: built-in defaults < /etc/artifactfs/config.toml < ~/.config/artifactfs/config.toml
< environment < command-line flags (SPEC §11).

The TOML files may hold::

    store = "s3://bucket/prefix"          # or a directory
    cache_dir = "/var/cache/artifactfs"
    cache_size = "50GiB"
    refresh = 10
    [projects.vision]                      # access control (SPEC §9)
    readers = ["ml"]
    writers = ["ml-admin"]
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UsageError

SYSTEM_CONFIG = "/etc/artifactfs/config.toml"
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?i?b?)?\s*", re.I)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
          "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40, "pi": 2**50, "pib": 2**50}


def parse_size(value: str | int) -> int:
    """``'1GB'`` → 10**9, ``'500MiB'`` → 500·2**20, ``1024`` → 1024; clear error otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"invalid size {value!r}: negative")
        return value
    m = _SIZE_RE.fullmatch(str(value))
    if not m or (m.group(2) is None and not m.group(1)):
        raise UsageError(f"invalid size {value!r}: use e.g. 1GB, 500MiB, 2048")
    unit = (m.group(2) or "").lower()
    if unit not in _UNITS:
        raise UsageError(f"invalid size {value!r}: unknown unit {m.group(2)!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def xdg_data_home() -> str:
    return os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")


def xdg_cache_home() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")


def xdg_config_home() -> str:
    return os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")


def runtime_dir() -> str:
    """Where daemons keep their control sockets and mount registry."""
    if os.geteuid() == 0:
        return "/run/artifactfs"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/artifactfs-{os.geteuid()}",
                        "artifactfs")


@dataclass(frozen=True)
class ProjectAccess:
    readers: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    store: str = field(default_factory=lambda: os.path.join(xdg_data_home(), "artifactfs", "store"))
    cache_dir: str = field(default_factory=lambda: os.path.join(xdg_cache_home(), "artifactfs"))
    cache_size: int = 20 * 2**30
    refresh: float = 10.0
    projects: dict[str, ProjectAccess] = field(default_factory=dict)

    def with_flags(self, **flags: Any) -> Config:
        """A copy with every flag that is not ``None`` applied."""
        changes = {k: v for k, v in flags.items() if v is not None}
        if "cache_size" in changes:
            changes["cache_size"] = parse_size(changes["cache_size"])
        return replace(self, **changes)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except PermissionError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"invalid config file {path}: {e}") from None


def _apply(cfg: Config, doc: dict[str, Any], where: str) -> Config:
    out = cfg
    if "store" in doc:
        out = replace(out, store=str(doc["store"]))
    if "cache_dir" in doc:
        out = replace(out, cache_dir=os.path.expanduser(str(doc["cache_dir"])))
    if "cache_size" in doc:
        out = replace(out, cache_size=parse_size(doc["cache_size"]))
    if "refresh" in doc:
        try:
            out = replace(out, refresh=float(doc["refresh"]))
        except (TypeError, ValueError):
            raise UsageError(f"invalid refresh in {where}: {doc['refresh']!r}") from None
    projects = doc.get("projects")
    if isinstance(projects, dict):
        acl = dict(out.projects)
        for name, p in projects.items():
            if isinstance(p, dict):
                acl[name] = ProjectAccess(tuple(map(str, p.get("readers", ()))),
                                          tuple(map(str, p.get("writers", ()))))
        out = replace(out, projects=acl)
    return out


def load(config_file: str | None = None) -> Config:
    """Defaults, then the system and user config files (or ``config_file``), then env."""
    cfg = Config()
    files = [config_file] if config_file else [
        SYSTEM_CONFIG, os.path.join(xdg_config_home(), "artifactfs", "config.toml")]
    for path in files:
        cfg = _apply(cfg, _read_toml(path), path)
    env = os.environ
    if env.get("ARTIFACTFS_STORE"):
        cfg = replace(cfg, store=env["ARTIFACTFS_STORE"])
    if env.get("ARTIFACTFS_CACHE_DIR"):
        cfg = replace(cfg, cache_dir=env["ARTIFACTFS_CACHE_DIR"])
    if env.get("ARTIFACTFS_CACHE_SIZE"):
        cfg = replace(cfg, cache_size=parse_size(env["ARTIFACTFS_CACHE_SIZE"]))
    return cfg
