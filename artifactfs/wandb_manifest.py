"""W&B artifact manifests (``wandb_manifest.json``, version 1): import into and export from a
store, so an artifact moves between W&B and artifactfs with the same files and references.

The format (written by W&B's ``ArtifactManifestV1``)::

    {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
     "storagePolicyConfig": {"storageLayout": "V2"},
     "contents": {PATH: {"digest": D, "size": N, "ref": URI, "extra": {...},
                         "birthArtifactID": ID}, ...}}

* A file entry (no ``ref``) has ``digest`` = base64 of the MD5 of its bytes.  Import reads the
  file from ``--files DIR``, checks size and MD5 against the manifest (a mismatch names the
  path and nothing is written), then stores it like ``put`` (SHA-256, chunks).  Export writes
  every file (verified, like ``get``) and computes the MD5 of what it wrote.
* A reference entry keeps its URI.  ``s3://``: ``digest`` is the ETag without quotes and
  ``extra.versionID`` the object version; ``gs://``: ``digest`` is the base64 MD5 (an ETag for
  composite objects) and ``extra.versionID`` the generation; ``http(s)://``: ``digest`` is
  the ETag, or the URL itself when the server gave none; ``file://``: ``digest`` is the base64
  MD5 of the file, or the URI itself for ``checksum=False``.  These become the identities our
  references record (§7), so reads of an imported reference are verified exactly like reads of
  one logged here; a ``file://`` reference is read once at import to check its MD5 and record
  its SHA-256.
* Kept only by W&B: ``birthArtifactID`` and any ``extra`` beyond ETag and version id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import fetch, ingest, model, refs
from .catalog import VersionRecord
from .errors import IntegrityError, UsageError
from .names import check_path
from .refs import file as file_refs
from .repo import Repo

MANIFEST = "wandb_manifest.json"
POLICY = "wandb-storage-policy-v1"
PIECE = 1 << 20


def md5_b64_file(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while buf := f.read(PIECE):
            h.update(buf)
    return base64.b64encode(h.digest()).decode("ascii")


def load(path: str) -> dict[str, dict[str, Any]]:
    """The ``contents`` of a version-1 manifest, every entry checked; clear errors otherwise."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such manifest: {path}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"{path} is not a W&B manifest (not JSON: {err})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or \
            not isinstance(doc.get("contents"), dict):
        raise UsageError(f"{path} is not a W&B manifest of version 1 "
                         "(need {\"version\": 1, \"contents\": {...}})")
    out: dict[str, dict[str, Any]] = {}
    for p, e in doc["contents"].items():
        check_path(p)
        if not isinstance(e, dict) or not isinstance(e.get("digest"), str):
            raise UsageError(f"manifest entry {p!r} has no digest")
        size = e.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or
                                 size < 0):
            raise UsageError(f"manifest entry {p!r} has a bad size {size!r}")
        if "ref" in e and not isinstance(e["ref"], str):
            raise UsageError(f"manifest entry {p!r} has a bad ref {e['ref']!r}")
        if not isinstance(e.get("extra", {}), dict):
            raise UsageError(f"manifest entry {p!r} has a bad extra {e['extra']!r}")
        out[p] = e
    return out


# --- import --------------------------------------------------------------------------------

def _b64_md5_hex(digest: str) -> str | None:
    """The hex MD5 a base64 digest encodes, or None when it is not one (an ETag, a URI)."""
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def _reference(path: str, e: Mapping[str, Any]) -> model.Entry:
    """Our reference entry for a W&B reference entry (see the module docstring)."""
    uri, digest = e["ref"], e["digest"]
    extra = e.get("extra") or {}
    scheme = refs.scheme_of(uri)
    unchecked = digest == uri
    if scheme == "file":
        return _file_reference(path, uri, None if unchecked else digest)
    size = e.get("size")
    if size is None:  # W&B always records it; without it the source must be asked
        return refs.expand(uri, path, checksum=not unchecked, max_objects=1)[0][1]
    if unchecked:
        return model.ref_entry(model.RefInfo(uri=uri, checksum=False), size)
    version = extra.get("versionID")
    version = None if version is None else str(version)
    if scheme == "s3":
        etag = f'"{digest.strip(chr(34))}"'
    elif scheme == "gs":
        md5 = _b64_md5_hex(digest)
        etag = f'"{md5}"' if md5 else f'"{digest.strip(chr(34))}"'
    else:
        etag = str(extra.get("etag") or digest)
    return model.ref_entry(model.RefInfo(uri=uri, etag=etag, version_id=version), size)


def _file_reference(path: str, uri: str, md5: str | None) -> model.Entry:
    [(_, entry)] = refs.expand(uri, path, checksum=md5 is not None, max_objects=1)
    if md5 is not None:
        local = file_refs.path_of(uri)
        if md5_b64_file(local) != md5:
            raise IntegrityError(f"{path}: {uri} does not have the MD5 the manifest records")
    return entry


def _ident(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_files(files: Iterable[tuple[str, str, Mapping[str, Any]]]
                 ) -> list[tuple[ingest.Source, tuple[int, ...]]]:
    """Sources for the manifest's files, each checked against its size and MD5."""
    def one(item: tuple[str, str, Mapping[str, Any]]) -> tuple[ingest.Source, tuple[int, ...]]:
        path, local, e = item
        try:
            st = os.stat(local)
        except FileNotFoundError:
            raise UsageError(f"{path}: missing from the files directory ({local})") from None
        if not os.path.isfile(local):
            raise UsageError(f"{path}: not a regular file ({local})")
        if e.get("size") is not None and st.st_size != e["size"]:
            raise IntegrityError(f"{path}: size is {st.st_size}, the manifest says {e['size']}")
        if md5_b64_file(local) != e["digest"]:
            raise IntegrityError(f"{path}: MD5 differs from the manifest's digest")
        src = ingest.Source(path, local, "file", st.st_size, st.st_mtime_ns,
                            bool(st.st_mode & 0o111))
        return src, _ident(st)

    with ThreadPoolExecutor(8, thread_name_prefix="md5") as pool:
        return list(pool.map(one, files))


def import_manifest(repo: Repo, manifest: str, files_dir: str | None, project: str, name: str,
                    type_: str, progress: ingest.Progress | None = None,
                    **kw: Any) -> tuple[VersionRecord, bool]:
    """A W&B manifest (and the directory of its downloaded files) → the next version."""
    contents = load(manifest)
    repo.check_type(project, name, type_)
    entries: dict[str, model.Entry | None] = {}
    files = []
    for p, e in sorted(contents.items()):
        if "ref" in e:
            entries[p] = _reference(p, e)
        else:
            if files_dir is None:
                raise UsageError(f"the manifest holds files ({p}, …): give --files DIR")
            files.append((p, os.path.join(files_dir, *p.split("/")), e))
    checked = _check_files(files)
    # the lease against gc (gcsync.py) from the first object stored to the record: objects
    # found already stored are taken care of only when stored through its session
    with repo.writing(f"import {project}/{name}") as w:
        entries.update(ingest.store_files(w.store, [s for s, _ in checked], progress))
        for src, ident in checked:  # hashed twice (MD5, SHA-256): the same bytes both times?
            if _ident(os.stat(src.local)) != ident:
                raise IntegrityError(f"{src.path}: {src.local} changed while it was imported")
        return repo.commit_entries(project, name, type_, entries, session=w, **kw)


# --- export --------------------------------------------------------------------------------

def _ref_json(e: model.Entry) -> dict[str, Any]:
    info = e.ref
    assert info is not None
    out: dict[str, Any] = {"ref": info.uri, "size": e.size}
    if not info.checksum:
        return {"digest": info.uri, **out}
    scheme = refs.scheme_of(info.uri)
    extra: dict[str, Any] = {}
    if info.version_id is not None:
        extra["versionID"] = info.version_id
    if scheme == "file":
        refs.verify_whole(e)  # the MD5 below is of the bytes that were logged
        digest = md5_b64_file(file_refs.path_of(info.uri))
    elif scheme == "gs" and info.etag and len(info.etag.strip('"')) == 32:
        digest = base64.b64encode(bytes.fromhex(info.etag.strip('"'))).decode("ascii")
    elif scheme in ("s3", "gs"):
        digest = (info.etag or "").strip('"')
        extra["etag"] = digest
    else:
        digest = info.etag or info.uri
        if info.etag:
            extra["etag"] = info.etag
    return {"digest": digest, **out, **({"extra": extra} if extra else {})}


def export_version(repo: Repo, rec: VersionRecord, out_dir: str,
                   progress: ingest.Progress | None = None) -> dict[str, Any]:
    """Write ``rec``'s files to ``out_dir/files/`` (verified, like ``get``) and its manifest
    to ``out_dir/wandb_manifest.json``; returns the manifest.  References stay references;
    empty directories are left out (W&B has none); a symlink is an error (W&B has none)."""
    files_root = os.path.join(out_dir, "files")
    if os.path.lexists(files_root) and (not os.path.isdir(files_root) or
                                        os.listdir(files_root)):
        raise UsageError(f"{files_root} exists and is not an empty directory")
    files: list[tuple[str, model.Entry]] = []
    contents: dict[str, dict[str, Any]] = {}
    for path, e in repo.entries(rec):
        if e.kind == "symlink":
            raise UsageError(f"{rec.label} holds a symlink ({path}), which W&B artifacts can "
                             "not; put it again with --follow-symlinks")
        if e.kind == "ref":
            contents[path] = _ref_json(e)
        elif e.kind == "file":
            files.append((path, e))
    os.makedirs(files_root, exist_ok=True)

    def one(item: tuple[str, model.Entry]) -> tuple[str, dict[str, Any]]:
        path, e = item
        dest = os.path.join(files_root, *path.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)  # a fresh tree: no links in it
        fetch.download_file(repo.store, e, dest, progress)
        return path, {"digest": md5_b64_file(dest), "size": e.size}

    with ThreadPoolExecutor(8, thread_name_prefix="export") as pool:
        contents.update(pool.map(one, files))
    doc = {"version": 1, "storagePolicy": POLICY, "storagePolicyConfig": {"storageLayout": "V2"},
           "contents": dict(sorted(contents.items()))}
    tmp = os.path.join(out_dir, f".{MANIFEST}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, MANIFEST))
    return doc
