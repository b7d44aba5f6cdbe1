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

What is subtle: a mistake in this file must never loosen access (SPEC §9).  So every key is
known and typed: an unknown key (``reader =``), a wrong type (``readers = "grp"``, which would
otherwise be the groups g, r, p), ``projects = [...]``, a project that is not a table, an empty
``readers``/``writers`` list (everyone? nobody?), an unreadable or non-UTF-8 file, a ``--config``
file that does not exist: each is a :class:`ConfigError` naming the file, the key and, where it
can be found, the line.  Only a *default* file that does not exist is fine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError, InvalidName, NotFound, UsageError
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
    config_file: str | None = None  # the --config file, else None: the default files

    @property
    def restricts_reads(self) -> bool:
        """Whether some project names its readers (SPEC §9): a directory store made now is
        then not readable by others (store/local.py)."""
        return any(p.readers for p in self.projects.values())

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


def config_files(config_file: str | None = None) -> list[str]:
    """The files :func:`load` reads, in order (later ones win)."""
    if config_file:
        return [absolute_path(config_file)]
    return [SYSTEM_CONFIG, os.path.join(xdg_config_home(), "artifactfs", "config.toml")]


def load(config_file: str | None = None) -> Config:
    """Defaults, then the system and user config files (or ``config_file``), then env."""
    cfg = Config(config_file=absolute_path(config_file) if config_file else None)
    for path in config_files(config_file):
        doc = _read(path, explicit=bool(config_file))
        if doc is not None:
            cfg = _apply(cfg, doc)
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


class Watch:
    """The config files as a daemon sees them over its life: :meth:`changed` is the newly
    loaded config when a file changed (appeared, vanished, was rewritten) since the last call,
    else None; a broken file raises :class:`ConfigError` like :func:`load`."""

    def __init__(self, config_file: str | None) -> None:
        self.config_file = config_file
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for path in config_files(self.config_file):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> Config | None:
        stamp = self._stamp()
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        return load(self.config_file)


# --- reading one file, strictly ----------------------------------------------------------------

Key = tuple[str, ...]
_TOP = ("store", "project", "cache_dir", "cache_size", "refresh", "projects", "references")
_PROJECT = ("readers", "writers")
_REFERENCES = ("file_roots", "buckets", "private_hosts")
_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ASSIGN = re.compile(r"\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-.\s])+?)\s*=")
_PART = re.compile(r"\"([^\"]*)\"|'([^']*)'|([^.\s]+)")


@dataclass(frozen=True)
class _Doc:
    path: str
    data: dict[str, Any]
    lines: list[str]

    def error(self, key: Key, msg: str) -> ConfigError:
        line = _line_of(self.lines, key)
        where = f"config file {self.path}" + (f", line {line}" if line else "")
        return ConfigError(f"{where}: {'.'.join(key)}: {msg}")


def _read(path: str, explicit: bool) -> _Doc | None:
    """The parsed file; None for a missing default file; ConfigError for everything else."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return None
    except OSError as e:
        raise ConfigError(f"config file {path} can not be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"config file {path}, line {line}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    return _Doc(path, data, text.splitlines())


def _dotted(s: str) -> Key:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART.finditer(s))


def _line_of(lines: list[str], key: Key) -> int | None:
    """Best effort: the line that sets ``key`` (a table header, a key in a table, a dotted
    key), else the first line assigning its last part (inline tables)."""
    table: Key = ()
    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            table = _dotted(m.group(1))
            if table == key:
                return i
            continue
        m = _ASSIGN.match(line)
        if m and (table + _dotted(m.group(1)))[:len(key)] == key:
            return i
    bare = re.compile(rf"(?:^|[{{,\s]){re.escape(key[-1])}\s*=")
    return next((i for i, line in enumerate(lines, 1) if bare.search(line)), None)


def _table(doc: _Doc, key: Key, value: Any, known: tuple[str, ...], what: str
           ) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(key, f"must be a table ({what}), not {_kind(value)}")
    if known:
        for k in value:
            if k not in known:
                raise doc.error((*key, k), f"unknown key (known in [{'.'.join(key)}]: "
                                           f"{', '.join(known)})")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _string(doc: _Doc, key: Key, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise doc.error(key, f"must be a non-empty string, not {_kind(value)}")
    return value


def _strings(doc: _Doc, key: Key, value: Any, example: str, empty_ok: bool = False
             ) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise doc.error(key, f"must be a list of non-empty strings, e.g. {key[-1]} = "
                             f"[\"{example}\"], not {_kind(value)}")
    if not value and not empty_ok:
        raise doc.error(key, "an empty list is ambiguous: leave the key out, or name at "
                             "least one")
    return tuple(value)


def _apply(cfg: Config, doc: _Doc) -> Config:
    top = _table(doc, (), doc.data, (), "")
    here = os.path.dirname(os.path.abspath(doc.path))  # relative paths: to the file
    out = cfg
    for k, v in top.items():
        if k not in _TOP:
            raise doc.error((k,), f"unknown key (known: {', '.join(_TOP)})")
        if k == "store":
            out = replace(out, store=absolute_store(_string(doc, (k,), v), here))
        elif k == "project":
            try:
                out = replace(out, project=check_project(_string(doc, (k,), v)))
            except InvalidName as e:
                raise doc.error((k,), str(e)) from None
        elif k == "cache_dir":
            out = replace(out, cache_dir=absolute_path(_string(doc, (k,), v), here))
        elif k == "cache_size":
            try:
                out = replace(out, cache_size=parse_size(v if isinstance(v, (int, str)) and
                                                         not isinstance(v, bool) else "?"))
            except UsageError as e:
                raise doc.error((k,), str(e)) from None
        elif k == "refresh":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise doc.error((k,), f"must be a number of seconds >= 0, not {v!r}")
            out = replace(out, refresh=float(v))
        elif k == "projects":
            out = replace(out, projects={**out.projects, **_projects(doc, v)})
        else:
            out = replace(out, references=_references(doc, v))
    return out


def _projects(doc: _Doc, value: Any) -> dict[str, ProjectAccess]:
    acl = {}
    for name, p in _table(doc, ("projects",), value, (), "[projects.NAME] tables").items():
        key = ("projects", name)
        try:
            check_project(name)
        except InvalidName as e:
            raise doc.error(key, str(e)) from None
        p = _table(doc, key, p, _PROJECT, f"[projects.{name}] with readers and writers")
        acl[name] = ProjectAccess(*(_strings(doc, (*key, k), p[k], "ml") if k in p else ()
                                    for k in _PROJECT))
    return acl


def _references(doc: _Doc, value: Any) -> References:
    """Keys and types checked here (with their line), the values by :func:`parse_references`."""
    t = _table(doc, ("references",), value, _REFERENCES, "[references]")
    for k in t:
        _strings(doc, ("references", k), t[k], "...", True)
    try:
        return parse_references(t, doc.path)
    except UsageError as e:
        raise ConfigError(str(e)) from None
