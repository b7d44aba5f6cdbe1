"""The control protocol: every word that travels over a mount daemon's control socket.

One JSON object per line each way (docs/control.md has the table): a request ``{"op": NAME,
...}``; when the request asked for them (``"progress": true``), progress lines ``{"progress":
DONE, "total": N}``; then one reply, ``{"ok": true, ...}`` or ``{"ok": false, "error":
MESSAGE, "errno": N, "kind": CLASS}``.  This module is that vocabulary and nothing else: the
names of the requests, decoding a request's fields, building replies, refusals and progress
lines, turning a refusal back into the exception it was.  The transport (socket, peer
credentials, bounds) is ``control.py``'s; what a request does is its handler's (``daemon.py``
registers them; the draft requests are ``requests.py``'s).

What is subtle:

* ``kind`` names an ``errors.py`` class that the client raises again, so an ``error: …`` line
  and the exit status are the same as for a failure in the client's own process.  A ``kind``
  that is not an :class:`ArtifactfsError` subclass (a daemon of another release, or not ours)
  is raised as a plain :class:`ArtifactfsError`.  A refusal without ``kind`` (the dispatcher's
  own: an unknown request, a malformed line, an error of a non-draft handler) is one too.
* A field of the wrong JSON type — including ``true`` where a number is due, since a JSON
  boolean is a Python ``int`` — is a :class:`UsageError` naming the field, never a crash of
  the handler.
* Only a line with ``"ok"`` ends a request: a client skips (or shows) every line before it.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping
from typing import Any

from .. import errors
from ..errors import ArtifactfsError, UsageError

MAX_REQUEST = 1 << 20  # bytes of a request line; the rest is not read
MAX_WAIT = 600.0  # seconds a commit may wait for files still open (it holds a commit slot)

# The requests, by who may send them (docs/control.md says what each does).
DRAFT_OPS = ("draft.create", "draft.list", "draft.discard", "commit", "upsert")
STORE_WRITES = ("commit", "upsert")  # share the daemon's commit slots (all users)
ADMIN_OPS = ("refresh", "cleanup")  # root and the daemon's own user only
OPEN_OPS = ("stats", "run.attach")  # anyone; each handler decides what he may see or do
OPS = DRAFT_OPS + ADMIN_OPS + OPEN_OPS  # every request a daemon serves (docs/control.md)


def encode(doc: Mapping[str, Any]) -> bytes:
    """One line of the channel."""
    return json.dumps(doc).encode() + b"\n"


def decode(line: bytes) -> Any:
    """A line as JSON (``ValueError`` if it is not)."""
    return json.loads(line)


def field(req: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
          default: Any = None) -> Any:
    """``req[key]`` if it is absent (``default``), null or of type ``kind``, else UsageError."""
    v = req.get(key, default)
    if v is not None and (not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool)):
        raise UsageError(f"request field {key!r} has the wrong type")
    return v


def progress(done: int, total: int) -> dict[str, Any]:
    """A progress line: bytes stored so far of those to store."""
    return {"progress": done, "total": total}


def is_reply(doc: Mapping[str, Any]) -> bool:
    return "ok" in doc


def refusal(message: str, code: int = errno.EINVAL, kind: str | None = None) -> dict[str, Any]:
    """A failed reply; ``kind`` is an ``errors.py`` class name for the client to raise."""
    out: dict[str, Any] = {"ok": False, "error": message, "errno": code}
    if kind is not None:
        out["kind"] = kind
    return out


def error_reply(e: BaseException) -> dict[str, Any]:
    """The reply for an exception a handler met: its message, class name and errno."""
    msg = str(e)
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror + (f": {e.filename}" if e.filename else "")
    return {"ok": False, "error": msg, "kind": type(e).__name__, "errno": errors.errno_for(e)}


def raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` if it says ok, else raise the error it names (see the module docstring)."""
    if reply.get("ok"):
        return reply
    cls = getattr(errors, str(reply.get("kind")), None)
    if not (isinstance(cls, type) and issubclass(cls, ArtifactfsError)):
        cls = ArtifactfsError
    raise cls(str(reply.get("error", "request failed")))
