"""Stores: where one team's objects and catalog records live, and :func:`open_store`.

``open_store`` maps a store URI to an implementation: ``s3://bucket[/prefix]`` → :class:`S3Store`
(imported lazily, so a local store never imports boto3), ``file:///abs/path`` or a plain path
(``~`` expanded) → :class:`LocalStore`, ``None`` → the default directory
``$XDG_DATA_HOME/artifactfs/store`` (``~/.local/share/artifactfs/store``).
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from .base import Leftover, ListItem, Store
from .local import LocalStore

__all__ = ["Leftover", "ListItem", "LocalStore", "Store", "default_store_path", "open_store"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def default_store_path() -> str:
    """``$XDG_DATA_HOME/artifactfs/store``, by default ``~/.local/share/artifactfs/store``."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "artifactfs", "store")


def open_store(uri: str | None, private: bool = False) -> Store:
    """The store at ``uri`` (``None`` or empty: the default directory store).  ``private``: a
    directory store made now is not readable by others (the config restricts projects)."""
    if uri is None or not uri.strip():
        return LocalStore(default_store_path(), private=private)
    uri = uri.strip()
    if uri.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(uri)
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise UsageError(f"invalid store URI {uri!r}: use file:///absolute/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise UsageError(f"invalid store URI {uri!r}: use file:///absolute/path")
        return LocalStore(path, private=private)
    if _SCHEME.match(uri):
        raise UsageError(
            f"unsupported store URI {uri!r}: use a directory, file:///path or s3://bucket/prefix")
    return LocalStore(os.path.expanduser(uri), private=private)
