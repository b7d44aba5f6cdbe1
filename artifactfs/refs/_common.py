"""Helpers shared by the reference schemes: naming, limits, byte ranges, atomic downloads.

What is subtle:

* Entry paths come from outside (file names, object keys, URL paths), so every produced path
  goes through :func:`artifactfs.names.check_path`; a key such as ``a//b`` is refused with a
  message naming it rather than silently renamed.
* ``max_objects`` is a hard limit: expanding more objects is an error, never a truncation,
  and listers stop as soon as they have seen one object too many.
* Downloads write to a temp file next to the destination and rename it into place only after
  the scheme has verified every byte, so a failed download never leaves wrong bytes under the
  destination name.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from typing import BinaryIO

from .. import s3util
from ..errors import ReferenceChanged, UsageError
from ..names import check_path

DEFAULT_MAX_OBJECTS = 10_000
PIECE = 1024 * 1024  # streaming buffer for whole-object copies

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def deadline_s() -> float:
    """Retry budget of one operation on a remote source (SPEC §10): the same knob as S3's,
    ``ARTIFACTFS_S3_RETRY_SECONDS`` (default 30 s)."""
    return s3util.retry_seconds()


def too_many(uri: str, max_objects: int) -> UsageError:
    return UsageError(
        f"reference {uri} has more than {max_objects} objects (max_objects={max_objects}); "
        "raise max_objects to add them all"
    )


def check_max_objects(max_objects: int) -> None:
    if not isinstance(max_objects, int) or isinstance(max_objects, bool) or max_objects < 1:
        raise UsageError(f"invalid max_objects {max_objects!r}: must be a positive integer")


def single_path(uri: str, name: str | None, basename: str) -> str:
    """The artifact path of a single-object reference: ``name`` or the source's basename."""
    path = name if name else basename
    if not path:
        raise UsageError(f"reference {uri} has no file name: pass name= to place it")
    return check_path(path)


def member_path(name: str | None, rel: str) -> str:
    """The artifact path of one object of an expanded prefix/directory: ``name/rel``."""
    prefix = name.strip("/") if name else ""
    return check_path(posixpath.join(prefix, rel) if prefix else rel)


def clip(size: int, offset: int, length: int) -> int:
    """How many bytes a read of [offset, offset+length) gets from an object of ``size``."""
    if offset < 0 or length < 0:
        raise ValueError(f"bad range offset={offset} length={length}")
    return max(0, min(size, offset + length) - offset)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` → (a, b, total or None); ``None`` when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def check_length(uri: str, data: bytes, want: int) -> bytes:
    if len(data) != want:
        raise ReferenceChanged(uri, f"got {len(data)} bytes where {want} were expected")
    return data


def atomic_download(dest_path: str, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temp file next to ``dest_path``, fsync it, rename it into place.

    ``write`` must raise (and then nothing is left behind) unless every byte it wrote was
    verified against the recorded identity.
    """
    directory = os.path.dirname(os.path.abspath(dest_path))
    tmp = os.path.join(directory, f".{os.path.basename(dest_path)}.ref-{os.getpid()}-"
                                  f"{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
