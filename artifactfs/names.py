"""Validation of user-supplied names, entry paths and version refs (SPEC §2).

Everything that comes from a user or from the (untrusted) store goes through here before it
is used as a key or a path, so a bad value is refused with a message that names it.  Also the
``--metadata`` JSON of the CLI.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidName, UsageError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_RE = re.compile(r"v(0|[1-9][0-9]{0,9})")
RESERVED_PROJECTS = frozenset({"drafts"})
REGISTRY = "registry"  # the project of linked collections (links.py): written only by linking
MAX_COMPONENT = 255
MAX_PATH = 4096


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid project/artifact/alias name, else raise."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    return value


def check_project(value: str) -> str:
    check_name(value, "project name")
    if value in RESERVED_PROJECTS:
        raise InvalidName(f"invalid project name {value!r}: it is reserved")
    return value


def check_writable_project(value: str) -> str:
    """A project that versions may be committed to: not reserved, not the registry."""
    check_project(value)
    if value == REGISTRY:
        raise InvalidName(f"project {REGISTRY!r} holds linked collections: link a version "
                          "there (artifactfs link, Artifact.link) instead of writing to it")
    return value


def check_alias(value: str) -> str:
    check_name(value, "alias")
    if VERSION_RE.fullmatch(value):
        raise InvalidName(f"invalid alias {value!r}: an alias may not look like a version")
    return value


def check_component(value: str, what: str = "path component") -> str:
    """One path component of an entry: no '/', NUL, '.', '..' and at most 255 bytes."""
    if value in ("", ".", "..") or "/" in value or "\0" in value:
        raise InvalidName(f"invalid {what} {value!r}")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
        raise InvalidName(f"invalid {what} {value[:40]!r}…: longer than {MAX_COMPONENT} bytes")
    return value


def check_path(value: str) -> str:
    """Validate a relative, '/'-separated entry path; returns it unchanged."""
    if not isinstance(value, str) or value == "":
        raise InvalidName(f"invalid path {value!r}: empty")
    if value.startswith("/"):
        raise InvalidName(f"invalid path {value!r}: must be relative")
    if "\0" in value:
        raise InvalidName(f"invalid path {value!r}: contains NUL")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise InvalidName(f"invalid path {value[:40]!r}…: longer than {MAX_PATH} bytes")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise InvalidName(f"invalid path {value!r}: empty, '.' or '..' component")
        check_component(part)
    return value


def normalize_path(value: str) -> str:
    """Turn a user-given in-artifact path ('./a//b/', 'a\\b' stays) into canonical form."""
    parts = [p for p in value.strip().split("/") if p not in ("", ".")]
    return check_path("/".join(parts))


_WHEN = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
                   r"(Z|[+-]\d{2}:?\d{2})?")


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or date-time (``2026-11-01``, ``2026-11-01T12:00``, with seconds,
    fractions, ``Z`` or an offset); UTC when no zone is given."""
    if not isinstance(text, str) or not _WHEN.fullmatch(text):
        raise InvalidName(f"invalid time {text!r}: use e.g. 2026-11-01 or 2026-11-01T12:00 "
                          "(UTC unless a zone such as Z or +02:00 is given)")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidName(f"invalid time {text!r}: {e}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Ref:
    """``project/name[:REF]`` where REF is ``vN``, an alias (default ``latest``), or an alias
    at a time: ``latest@2026-11-01T12:00``, ``best@2026-11-01`` (``@TIME`` alone: latest)."""

    project: str
    name: str
    ref: str = "latest"

    @property
    def version(self) -> int | None:
        """The version number when the ref is ``vN``, else ``None`` (an alias)."""
        return int(self.ref[1:]) if VERSION_RE.fullmatch(self.ref) else None

    @property
    def alias(self) -> str:
        """The alias part of an alias ref (``latest`` for ``@TIME``)."""
        return self.ref.partition("@")[0] or "latest"

    @property
    def at(self) -> datetime | None:
        """The time of a dated ref, else ``None``."""
        _, sep, when = self.ref.partition("@")
        return parse_when(when) if sep else None

    @property
    def collection(self) -> str:
        return f"{self.project}/{self.name}"

    def __str__(self) -> str:
        return f"{self.project}/{self.name}:{self.ref}"


def parse_ref(value: str, default_project: str | None = None, allow_ref: bool = True) -> Ref:
    """Parse ``project/name[:REF]`` (``name[:REF]`` when a default project is given)."""
    if not isinstance(value, str) or not value:
        raise InvalidName(f"invalid artifact reference {value!r}")
    body, sep, ref = value.partition(":")
    if sep and not allow_ref:
        raise InvalidName(f"invalid artifact name {value!r}: no ':REF' expected here")
    if sep and not ref:
        raise InvalidName(f"invalid artifact reference {value!r}: empty version or alias")
    parts = body.split("/")
    if len(parts) == 1 and default_project is not None:
        project, name = default_project, parts[0]
    elif len(parts) == 2:
        project, name = parts
    else:
        raise InvalidName(f"invalid artifact reference {value!r}: expected PROJECT/NAME[:REF]")
    check_project(project)
    check_name(name, "artifact name")
    if sep and not VERSION_RE.fullmatch(ref):
        check_ref_name(ref)
    return Ref(project, name, ref if sep else "latest")


def check_ref_name(ref: str) -> str:
    """An alias, or ``ALIAS@TIME`` / ``@TIME`` (see :class:`Ref`); returns it unchanged."""
    alias, sep, when = ref.partition("@")
    if sep:
        if VERSION_RE.fullmatch(alias):
            raise InvalidName(f"invalid reference {ref!r}: a version ({alias}) does not change "
                              "over time; date an alias such as latest@TIME")
        parse_when(when)
        if not alias:
            return ref
    check_name(alias, "alias")
    return ref


def parse_metadata(value: str | None) -> dict[str, Any]:
    """``--metadata`` JSON: must be an object."""
    if value is None or value == "":
        return {}
    try:
        doc = json.loads(value)
    except ValueError as e:
        raise UsageError(f"invalid metadata JSON {value!r}: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"invalid metadata JSON {value!r}: must be an object")
    return doc
