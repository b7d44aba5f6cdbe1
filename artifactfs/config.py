"""Configuration: built-in defaults < /etc/artifactfs/config.toml < ~/.config/artifactfs/config.toml
< environment < command-line flags (SPEC §11).

Paths are made absolute as they are read (a flag or a variable against the working directory,
a config file's against the file's directory), so a daemon that later changes directory to
``/`` serves the store the user meant.

The TOML files may hold::

    store = "s3://bucket/prefix"          # or a directory (relative: to this file's directory)
    project = "vision"                     # the default project (see default_project)
    cache_dir = "/var/cache/artifactfs"
    cache_size = "50GiB"
    refresh = 10
    [projects.vision]                      # access control (SPEC §9)
    readers = ["ml"]
    writers = ["ml-admin"]
    [references]                           # what a daemon serving others may read (SPEC §7)
    file_roots = ["/datasets"]             # file:// below these: served to every mount user
    buckets = ["s3://shared-data", "gs://public-sets"]
    private_hosts = ["minio.internal", "10.1.2.0/24"]   # http(s) to non-public addresses
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import NotFound, UsageError
from .names import check_project

SYSTEM_CONFIG = "/etc/artifactfs/config.toml"
DEFAULT_PROJECT = "uncategorized"  # wandb's project for runs that name none
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
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


def default_store() -> str:
    """The built-in store: ``$XDG_DATA_HOME/artifactfs/store`` (``~/.local/share/…``)."""
    return os.path.join(xdg_data_home(), "artifactfs", "store")


def store_directory(uri: str) -> str | None:
    """The directory of a directory store (a path or ``file:///path``); None for URIs."""
    if uri.startswith("file://"):
        return uri[len("file://"):] or None
    if not uri or _URI_RE.match(uri):
        return None
    return os.path.expanduser(uri)


def check_store_exists(uri: str) -> None:
    """NotFound for a directory store that does not exist, unless it is the default one (which
    is made on first use): a typo in ``--store`` must not serve, or fill, a new empty store."""
    path = store_directory(uri)
    if path is None or os.path.isdir(path):
        return
    if os.path.abspath(path) == os.path.abspath(default_store()):
        return
    raise NotFound(f"store {path} does not exist: check --store "
                   f"(mkdir -p {path} makes an empty store)")


def absolute_path(path: str, base: str | None = None) -> str:
    """``path`` with ``~`` expanded, made absolute against ``base`` (default: the working
    directory); an empty string stays empty."""
    if not path:
        return path
    return os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(path)))


def absolute_store(uri: str, base: str | None = None) -> str:
    """A store as given, with a plain directory path made absolute (see :func:`absolute_path`)."""
    if not uri or _URI_RE.match(uri):
        return uri
    return absolute_path(uri, base)


@dataclass(frozen=True)
class ProjectAccess:
    readers: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()


@dataclass(frozen=True)
class References:
    """``[references]``: what a daemon serving other users (root, ``--allow-other``) may read
    on their behalf beyond their own rights (SPEC §7; see artifactfs/refs/authority.py)."""

    file_roots: tuple[str, ...] = ()  # absolute, normalized directories
    buckets: tuple[str, ...] = ()  # "s3://bucket" / "gs://bucket"
    private_hosts: tuple[str, ...] = ()  # host names (lower case), IP addresses or CIDRs


_BUCKET_RE = re.compile(r"(s3|gs)://([a-z0-9][a-z0-9._-]{1,254})/?")
_HOST_RE = re.compile(r"(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
                      r"(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")


def parse_references(table: Any, where: str) -> References:
    """The ``[references]`` table of config file ``where``: exactly the keys ``file_roots``,
    ``buckets`` and ``private_hosts``, each a list of strings; anything else is an error naming
    the file and the key (never a silently smaller or larger allowance)."""
    def bad(key: str, why: str) -> UsageError:
        return UsageError(f"invalid config file {where}: [references]{' ' + key if key else ''}: "
                          f"{why}")

    if not isinstance(table, dict):
        raise bad("", "must be a table")
    for key in table:
        if key not in ("file_roots", "buckets", "private_hosts"):
            raise bad(key, "unknown key (known: file_roots, buckets, private_hosts)")
    lists: dict[str, list[str]] = {}
    for key in ("file_roots", "buckets", "private_hosts"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(key, f"must be a list of strings, not {value!r}")
        lists[key] = value
    roots = []
    for r in lists["file_roots"]:
        if not r.startswith("/") or "\0" in r:
            raise bad("file_roots", f"{r!r} is not an absolute directory")
        roots.append(os.path.normpath(r))
    buckets = []
    for b in lists["buckets"]:
        m = _BUCKET_RE.fullmatch(b)
        if m is None:
            raise bad("buckets", f"{b!r}: write s3://BUCKET or gs://BUCKET")
        buckets.append(f"{m.group(1)}://{m.group(2)}")
    hosts = []
    for h in lists["private_hosts"]:
        try:
            hosts.append(str(ipaddress.ip_network(h, strict=False)))
            continue
        except ValueError:
            pass
        if _HOST_RE.fullmatch(h.lower()) is None:
            raise bad("private_hosts", f"{h!r} is neither a host name, an IP address nor a CIDR")
        hosts.append(h.lower().rstrip("."))
    return References(tuple(roots), tuple(buckets), tuple(hosts))


@dataclass(frozen=True)
class Config:
    store: str = field(default_factory=default_store)
    cache_dir: str = field(default_factory=lambda: os.path.join(xdg_cache_home(), "artifactfs"))
    cache_size: int = 20 * 2**30
    refresh: float = 10.0
    project: str = DEFAULT_PROJECT
    projects: dict[str, ProjectAccess] = field(default_factory=dict)
    references: References = field(default_factory=References)

    def with_flags(self, **flags: Any) -> Config:
        """A copy with every flag that is not ``None`` applied (paths made absolute)."""
        changes = {k: v for k, v in flags.items() if v is not None}
        if "cache_size" in changes:
            changes["cache_size"] = parse_size(changes["cache_size"])
        if "store" in changes:
            changes["store"] = absolute_store(changes["store"])
        if "cache_dir" in changes:
            changes["cache_dir"] = absolute_path(changes["cache_dir"])
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
    here = os.path.dirname(os.path.abspath(where))
    if "store" in doc:
        out = replace(out, store=absolute_store(str(doc["store"]), here))
    if "cache_dir" in doc:
        out = replace(out, cache_dir=absolute_path(str(doc["cache_dir"]), here))
    if "project" in doc:
        out = replace(out, project=str(doc["project"]))
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
    if "references" in doc:
        out = replace(out, references=parse_references(doc["references"], where))
    return out


def load(config_file: str | None = None) -> Config:
    """Defaults, then the system and user config files (or ``config_file``), then env."""
    cfg = Config()
    files = [absolute_path(config_file)] if config_file else [
        SYSTEM_CONFIG, os.path.join(xdg_config_home(), "artifactfs", "config.toml")]
    for path in files:
        cfg = _apply(cfg, _read_toml(path), path)
    env = os.environ
    if env.get("ARTIFACTFS_STORE"):
        cfg = replace(cfg, store=absolute_store(env["ARTIFACTFS_STORE"]))
    if env.get("ARTIFACTFS_CACHE_DIR"):
        cfg = replace(cfg, cache_dir=absolute_path(env["ARTIFACTFS_CACHE_DIR"]))
    if env.get("ARTIFACTFS_CACHE_SIZE"):
        cfg = replace(cfg, cache_size=parse_size(env["ARTIFACTFS_CACHE_SIZE"]))
    if env.get("ARTIFACTFS_PROJECT"):
        cfg = replace(cfg, project=env["ARTIFACTFS_PROJECT"])
    return cfg


def default_project(cfg: Config | None = None) -> str:
    """The project of names given without one (``put PATH``, ``get NAME:REF``, the API's bare
    ``name:alias``): ``$ARTIFACTFS_PROJECT``, else ``project = "…"`` in the config file, else
    ``uncategorized`` (as wandb)."""
    project = (cfg if cfg is not None else load()).project
    try:
        return check_project(project)
    except UsageError as e:
        raise UsageError(f"invalid default project ({e}): set ARTIFACTFS_PROJECT or "
                         "project = \"…\" in the config file") from None
