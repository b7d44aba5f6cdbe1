"""``gs://`` references, through Google Cloud Storage's S3-compatible XML API.

Why the XML API and boto3 rather than ``google-cloud-storage``: it adds no dependency (boto3 is
already needed for S3), and the same code — listing, HEAD, ranged GET with ``If-Match``,
bounded retries, verification — serves both services, so GCS references behave exactly like
S3 ones.  The endpoint is ``https://storage.googleapis.com`` unless ``ARTIFACTFS_GCS_ENDPOINT``
is set (tests point it at a local S3 server); credentials are HMAC keys from
``GCS_ACCESS_KEY_ID`` / ``GCS_SECRET_ACCESS_KEY`` (Cloud Storage → Settings → Interoperability),
else boto3's usual chain.  The region sent is ``auto`` (``ARTIFACTFS_GCS_REGION`` overrides).

What is subtle:

* Every GCS object has a *generation* (``x-goog-generation``), versioned bucket or not.  It is
  recorded as the version id and reads ask for ``?generation=N`` (see
  :func:`artifactfs.refs.s3.compat_client`): with object versioning on, an overwritten object
  still gives its logged bytes; without it the old generation is gone, the GET fails, and the
  read is :class:`ReferenceChanged`.  Reads also send ``If-Match`` with the recorded ETag and
  check the answer's ETag and size, so a server that ignored the generation still cannot hand
  out other bytes.
* A service that does not report generations (an S3 server standing in for GCS) falls back to
  S3 semantics: ``x-amz-version-id`` when it versions, else the ETag.
* Listings carry no generations, so expanding a prefix HEADs every object (in parallel).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from ..model import Entry, RefInfo
from . import s3

DEFAULT_ENDPOINT = "https://storage.googleapis.com"


def _client() -> Any:
    endpoint = os.environ.get("ARTIFACTFS_GCS_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    return s3.compat_client(endpoint, os.environ.get("GCS_ACCESS_KEY_ID") or None,
                            os.environ.get("GCS_SECRET_ACCESS_KEY") or None, generations=True)


GS = s3.Flavor("gs", _client, gcs=True)


def expand(uri: str, name: str | None, checksum: bool, max_objects: int) -> list[tuple[str, Entry]]:
    return s3.expand_with(GS, uri, name, checksum, max_objects)


def read_range(info: RefInfo, size: int, offset: int, length: int) -> bytes:
    return s3.read_range_with(GS, info, size, offset, length)


def download(info: RefInfo, size: int, out: BinaryIO) -> None:
    s3.download_with(GS, info, size, out)


def verify_whole(info: RefInfo, size: int) -> None:
    s3.verify_whole_with(GS, info, size)
