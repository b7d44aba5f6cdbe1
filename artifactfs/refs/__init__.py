"""References (SPEC §7): entries whose bytes stay in their source, read lazily and verified.

This package owns turning a URI into reference entries (:func:`expand`) and reading those
entries back (:func:`read_range`, :func:`download_to`, :func:`verify_whole`).  One module per
scheme: ``file.py`` (``file://``), ``s3.py`` (``s3://``), ``gs.py`` (``gs://``, through GCS's
S3-compatible XML API), ``http.py`` (``http://``, ``https://``).  Scheme modules are imported
on first use, so importing this package does not import boto3.  Who may read what through a
daemon serving other users (SPEC §7 "Who resolves a reference") is ``authority.py``, with
``identity.py`` (acting as the reader), ``localfs.py`` (opening files without being
redirected) and ``netpolicy.py`` (which addresses HTTP may reach).

Contract kept by every scheme:

* ``expand`` records what the source says of each object (size, and with ``checksum=True`` its
  identity: sha256 + mtime, ETag + version id, or ETag); paths follow W&B: a single object is
  placed at ``name`` or its basename, a prefix/directory's objects at their path relative to
  the prefix, under ``name`` when given.  More than ``max_objects`` objects is a
  :class:`UsageError`, never a truncation; a missing source is :class:`NotFound`.
* A read returns exactly the recorded bytes or raises: :class:`ReferenceChanged` when the
  source no longer matches the recorded identity (or is gone), :class:`StoreUnavailable`
  when it could not be reached within the retry budget.  With ``checksum=False`` only the
  size is checked; the bytes are whatever the source holds now.
* Everything here is blocking and thread-safe: callers on the trio thread use worker threads.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import BinaryIO, Protocol, cast

from ..errors import UsageError
from ..model import Entry, RefInfo
from . import _common
from ._common import DEFAULT_MAX_OBJECTS
from .netpolicy import NetPolicy

__all__ = [
    "DEFAULT_MAX_OBJECTS",
    "SCHEMES",
    "download_to",
    "expand",
    "read_range",
    "scheme_of",
    "verify_whole",
]

SCHEMES: dict[str, str] = {"file": "file", "s3": "s3", "gs": "gs", "http": "http",
                           "https": "http"}


class _Scheme(Protocol):
    def expand(self, uri: str, name: str | None, checksum: bool,
               max_objects: int) -> list[tuple[str, Entry]]: ...

    def read_range(self, info: RefInfo, size: int, offset: int, length: int) -> bytes: ...

    def download(self, info: RefInfo, size: int, out: BinaryIO) -> None: ...

    def verify_whole(self, info: RefInfo, size: int) -> None: ...


def scheme_of(uri: str) -> str:
    """The (lower-case) scheme of a reference URI; :class:`UsageError` if unsupported."""
    if not isinstance(uri, str):
        raise UsageError(f"invalid reference URI {uri!r}")
    scheme, sep, _ = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise UsageError(
            f"unsupported reference URI {uri!r}: use file://, s3://, gs://, http:// or https://")
    return scheme


def _module(uri: str) -> _Scheme:
    mod: ModuleType = importlib.import_module(f".{SCHEMES[scheme_of(uri)]}", __name__)
    return cast(_Scheme, mod)


def _info(entry: Entry) -> RefInfo:
    if entry.kind != "ref" or entry.ref is None:
        raise UsageError(f"not a reference entry (kind {entry.kind!r})")
    return entry.ref


def expand(uri: str, name: str | None = None, checksum: bool = True,
           max_objects: int = DEFAULT_MAX_OBJECTS) -> list[tuple[str, Entry]]:
    """(artifact-relative path, reference entry) for every object ``uri`` names, sorted by path.

    Raises :class:`UsageError` (unknown scheme, bad name, more than ``max_objects``),
    :class:`NotFound` (nothing at ``uri``) or :class:`StoreUnavailable`.
    """
    _common.check_max_objects(max_objects)
    mod = _module(uri)
    out = mod.expand(uri, name or None, bool(checksum), max_objects)
    out.sort(key=lambda pe: pe[0].encode("utf-8", "surrogateescape"))
    return out


def read_range(entry: Entry, offset: int, length: int, net: NetPolicy | None = None) -> bytes:
    """Bytes [offset, offset+length) of a reference entry (fewer only at its recorded end).

    Raises :class:`ReferenceChanged` when the source no longer matches the recorded identity.
    A ``file://`` entry with a checksum has its whole file hashed on the first read of that
    file's current state (memoized per process); remote sources are checked per request.
    ``net``: the addresses an ``http(s)://`` read may connect to (a daemon serving others;
    see authority.py); other schemes do not connect to addresses of the record's choosing.
    """
    info = _info(entry)
    if net is not None and scheme_of(info.uri) in ("http", "https"):
        from . import http

        return http.read_range(info, entry.size, offset, length, net=net)
    return _module(info.uri).read_range(info, entry.size, offset, length)


def download_to(entry: Entry, dest_path: str) -> None:
    """Write the whole object to ``dest_path``, streaming; verified before it gets that name.

    The bytes go to a temp file in ``dest_path``'s directory that is renamed over
    ``dest_path`` only once every byte matched the recorded identity (sha256 for ``file://``;
    version id / ETag, size for remote sources).  On any error nothing is left behind.
    """
    info = _info(entry)
    mod = _module(info.uri)
    _common.atomic_download(dest_path, lambda f: mod.download(info, entry.size, f))


def verify_whole(entry: Entry) -> None:
    """Check now that the source still matches the recorded identity; raise if not.

    ``file://`` with a checksum: hashes the whole file (memoized like reads).  Remote sources:
    one metadata request (HEAD) compared with the recorded size, ETag and version id.
    """
    info = _info(entry)
    _module(info.uri).verify_whole(info, entry.size)
