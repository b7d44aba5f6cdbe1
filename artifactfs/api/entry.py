"""Entries of an artifact (wandb's ``ArtifactManifestEntry``) and its manifest.

An entry of a logged version carries its recorded digest (see verify.py for which digest is
which: SHA-256 of the bytes up to 8 MiB, the chunked digest above); an entry of a pending
artifact that names a local file hashes it on first use of ``digest``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .. import model
from ..errors import UsageError
from ..verify import describe, file_digest

if TYPE_CHECKING:
    from .artifact import Artifact


class ArtifactEntry:
    """One path of an artifact: a file, a reference, a symlink or an empty directory."""

    def __init__(self, artifact: Artifact, path: str, entry: model.Entry | None,
                 local_path: str | None = None) -> None:
        self._artifact = artifact
        self.path = path
        self._entry = entry
        self.local_path = local_path  # pending entries: the local file that will be stored
        self._local: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.path

    def _described(self) -> dict[str, Any]:
        if self._entry is not None:
            return describe(self._entry)
        if self._local is None:
            assert self.local_path is not None
            self._local = file_digest(self.local_path)
        return self._local

    @property
    def digest(self) -> str:
        """The recorded digest (``digest_kind`` says which kind, see verify.py)."""
        return str(self._described()["digest"])

    @property
    def digest_kind(self) -> str:
        return str(self._described()["digest_kind"])

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the bytes when known (what ``sha256sum`` prints for a copy)."""
        v = self._described().get("sha256")
        return str(v) if v else None

    @property
    def size(self) -> int:
        if self._entry is not None:
            return self._entry.size
        assert self.local_path is not None
        return os.path.getsize(self.local_path)

    @property
    def ref(self) -> str | None:
        """The reference URI, for entries that track external data."""
        e = self._entry
        return e.ref.uri if e is not None and e.ref is not None else None

    def ref_url(self) -> str:
        """The reference URI; for stored files ``artifactfs://PROJECT/NAME:vN/PATH``."""
        if self.ref is not None:
            return self.ref
        return f"artifactfs://{self._artifact._label()}/{self.path}"

    def ref_target(self) -> str:
        """The URI a reference points at; stored files have none."""
        if self.ref is None:
            raise UsageError(f"{self.path!r} is not a reference: it is stored in the artifact "
                             "(ref_url() names it)")
        return self.ref

    def download(self, root: str | None = None, skip_cache: bool | None = None) -> str:
        """Download this one path; returns its local path."""
        return self._artifact._download_entry(self.path, root, bool(skip_cache))

    def __repr__(self) -> str:
        return f"ArtifactEntry({self.path!r}, size={self.size})"


class Manifest:
    """All entries of an artifact, by path (wandb's ``ArtifactManifest``)."""

    def __init__(self, entries: Mapping[str, ArtifactEntry], digest: str | None) -> None:
        self.entries = dict(entries)
        self.digest = digest

    def get_entry_by_path(self, path: str) -> ArtifactEntry | None:
        return self.entries.get(path)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def to_json(self) -> dict[str, Any]:
        """``{"digest", "contents": {path: {"size", "digest", "digest_kind", "ref"?}}}``."""
        out: dict[str, Any] = {}
        for p, e in self.entries.items():
            d: dict[str, Any] = {"size": e.size, "digest": e.digest, "digest_kind": e.digest_kind}
            if e.ref is not None:
                d["ref"] = e.ref
            out[p] = d
        return {"digest": self.digest, "contents": out}
