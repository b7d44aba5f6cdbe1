"""Exception hierarchy of artifactfs.

Every error a user can cause or meet derives from :class:`ArtifactfsError`; the CLI prints
``error: <message>`` for these and exits 1, with no traceback.  The mapping to errno values
for the mount lives in exactly one place, :data:`ERRNO`, used only by ``mount/ops.py``.
"""

from __future__ import annotations

import errno


class ArtifactfsError(Exception):
    """Base class: a failure explained to the user in one line."""


class UsageError(ArtifactfsError):
    """Bad input from the user: a name, path, size, JSON document, option."""


class ConfigError(ArtifactfsError):
    """A config file that can not be read or says something artifactfs does not understand:
    the CLI and the daemon refuse to start (SPEC §9, config errors fail closed)."""


class InvalidName(UsageError):
    """A project, artifact or alias name, an entry path or a ref does not follow the rules."""


class NotFound(ArtifactfsError):
    """An artifact, version, alias, run, draft or store key does not exist."""


class AlreadyExists(ArtifactfsError):
    """A create-only record already exists (a put-if-absent lost)."""


class PreconditionFailed(ArtifactfsError):
    """A compare-and-swap lost: the record changed since it was read."""


class TypeConflict(ArtifactfsError):
    """An artifact name is already used in the project with another type."""


class IntegrityError(ArtifactfsError):
    """Store or source content does not match its recorded digest: never served."""


class ReferenceChanged(IntegrityError):
    """A reference's source no longer matches what was recorded when it was logged."""

    def __init__(self, uri: str, detail: str = "") -> None:
        msg = f"reference changed since it was logged: {uri}"
        super().__init__(msg + (f" ({detail})" if detail else ""))
        self.uri = uri


class StoreUnavailable(ArtifactfsError):
    """The store (or a reference source) could not be reached within the retry budget."""


class ReadOnly(ArtifactfsError):
    """A write outside drafts."""


class PermissionDenied(ArtifactfsError):
    """The caller may not read or write this project or draft."""


class Conflict(ArtifactfsError):
    """Two writers of a distributed draft gave different content for the same paths."""


class Busy(ArtifactfsError):
    """The object is in use (a draft being committed, a file still open for writing)."""


class NoSpace(ArtifactfsError):
    """The local disk (cache or drafts) is full even after eviction."""


ERRNO: dict[type[BaseException], int] = {
    InvalidName: errno.EINVAL,
    ConfigError: errno.EINVAL,
    UsageError: errno.EINVAL,
    NotFound: errno.ENOENT,
    FileNotFoundError: errno.ENOENT,
    AlreadyExists: errno.EEXIST,
    FileExistsError: errno.EEXIST,
    ReadOnly: errno.EROFS,
    PermissionDenied: errno.EACCES,
    PermissionError: errno.EACCES,
    Busy: errno.EBUSY,
    NoSpace: errno.ENOSPC,
    IntegrityError: errno.EIO,
    StoreUnavailable: errno.EIO,
    NotADirectoryError: errno.ENOTDIR,
    IsADirectoryError: errno.EISDIR,
}


def errno_for(exc: BaseException) -> int:
    """The errno for an exception: the most specific class in :data:`ERRNO`, else EIO."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    for cls in type(exc).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return errno.EIO
