"""The daemon's control channel: a unix socket speaking one JSON line each way.

What travels on it (requests, replies, progress lines, error kinds) is ``protocol.py``'s and
docs/control.md's; this module is the transport.  A handler may send lines without ``"ok"``
before its reply (``Peer.say``: progress of a long commit); a client that did not ask for them
never gets any.  Handlers are registered by name (``stats``, ``refresh``, ``cleanup``
here; drafts will add ``commit``), receive the request and the caller's credentials (uid, gid,
pid from ``SO_PEERCRED``, checked by the kernel, so a handler can trust them) and run on the
trio thread, so they must push blocking work to worker threads themselves.

Stopping: :meth:`ControlServer.drain` refuses new requests ("the mount is stopping") and waits,
bounded by its caller, for the ones in flight to send their replies, so a commit that a SIGTERM
interrupted still tells its client the version it made.

The socket is world-connectable (0666): every handler decides what a caller may do, and no
user can exhaust the daemon for the others: a uid may hold :data:`MAX_PER_UID` connections at
once (the next one gets an immediate refusal and is closed, so it costs no descriptor), a
connection that sends no request line within :data:`IDLE_TIMEOUT` seconds is closed, and
requests that change the daemon's state for everyone (``register(..., admin=True)``) are only
for root and the daemon's own user.  The client half (:func:`request`) is plain blocking sockets and does not import trio, so CLI
commands that talk to a daemon start fast.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import ArtifactfsError, errno_for
from . import protocol
from .protocol import MAX_REQUEST

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)
MAX_PER_UID = 16  # connections one uid may have open at once
MAX_CONNECTIONS = 256  # all uids together: the daemon's file descriptors stay for FUSE
IDLE_TIMEOUT = 5.0  # seconds a connection may take to send its request line


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    # send one line before the reply (trio thread); None when the client went away
    say: Callable[[dict[str, Any]], Awaitable[None]] | None = field(default=None, compare=False)


Handler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, path: str, per_uid: int = MAX_PER_UID, idle: float = IDLE_TIMEOUT,
                 total: int = MAX_CONNECTIONS) -> None:
        self.path = path
        self.handlers: dict[str, Handler] = {}
        self.admin_ops: set[str] = set()
        self.per_uid, self.idle, self.total = per_uid, idle, total
        self.open: dict[int, int] = {}  # uid -> connections being served
        self.stopping = False
        self._inflight = 0  # requests read and not yet replied to
        self._idle: trio.Event | None = None  # set when the last request in flight replied

    async def drain(self) -> None:
        """Refuse new requests and wait until those in flight have replied (the caller
        bounds the wait with a cancel scope)."""
        import trio

        self.stopping = True
        if self._inflight:
            self._idle = trio.Event()
            log.info("waiting for %d control request(s) in flight", self._inflight)
            await self._idle.wait()

    @property
    def inflight(self) -> int:
        return self._inflight

    def register(self, op: str, handler: Handler, admin: bool | None = None) -> None:
        """Serve ``op``, a request of the protocol (``protocol.OPS``).  ``admin``: only root
        and the daemon's own user may send it (it changes the daemon's state for everyone:
        cache cleanup, refresh); by default as ``protocol.ADMIN_OPS`` says."""
        if op not in protocol.OPS:
            raise ValueError(f"{op!r} is not a request of the control protocol (protocol.py)")
        self.handlers[op] = handler
        if op in protocol.ADMIN_OPS if admin is None else admin:
            self.admin_ops.add(op)

    async def serve(self, task_status: Any = None) -> None:
        import trio

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(self.path)
        os.chmod(self.path, 0o666)
        sock.listen(64)
        try:
            await trio.serve_listeners(self._handle, [trio.SocketListener(sock)],
                                       task_status=task_status or trio.TASK_STATUS_IGNORED)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _admit(self, uid: int) -> str | None:
        """Count a new connection of ``uid``, or say why it is refused."""
        if self.open.get(uid, 0) >= self.per_uid:
            return f"too many control connections from uid {uid} (at most {self.per_uid})"
        if sum(self.open.values()) >= self.total:
            return f"too many control connections (at most {self.total})"
        self.open[uid] = self.open.get(uid, 0) + 1
        return None

    def _leave(self, uid: int) -> None:
        self.open[uid] -= 1
        if not self.open[uid]:
            del self.open[uid]

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One connection: refused at once over the caller's cap, closed when no request
        line came within ``idle`` seconds; the reply may take as long as its handler."""
        import trio

        async with stream:
            try:
                pid, uid, gid = struct.unpack("3i", stream.socket.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
                refused = self._admit(uid)
                if refused is not None:
                    with trio.move_on_after(1):
                        await stream.send_all(protocol.encode(
                            protocol.refusal(refused, errno.EAGAIN, "Busy")))
                    return
                try:
                    await self._serve_one(stream, Peer(pid, uid, gid))
                finally:
                    self._leave(uid)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
            except Exception:
                log.exception("control request failed")

    async def _serve_one(self, stream: trio.SocketStream, peer: Peer) -> None:
        import trio

        async def say(doc: dict[str, Any]) -> None:
            await stream.send_all(protocol.encode(doc))

        buf = b""
        with trio.fail_after(self.idle):
            while b"\n" not in buf and len(buf) < MAX_REQUEST:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
        self._inflight += 1
        try:
            reply = await self._dispatch(buf.split(b"\n", 1)[0], replace(peer, say=say))
            await stream.send_all(protocol.encode(reply))
        finally:
            self._inflight -= 1
            if not self._inflight and self._idle is not None:
                self._idle.set()

    async def _dispatch(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            req = protocol.decode(line)
            handler = self.handlers.get(str(req.get("op"))) if isinstance(req, dict) else None
            if handler is None:
                return protocol.refusal(f"unknown request {line[:80]!r}", 22)
            if self.stopping:
                return protocol.refusal("the mount is stopping: nothing was done", errno.EBUSY,
                                        "Busy")
            if req["op"] in self.admin_ops and peer.uid not in (0, os.geteuid()):
                raise errors.PermissionDenied(f"only root or the daemon's user may send "
                                              f"{req['op']!r} requests")
            out = await handler(req, peer)
            return {"ok": True, **out}
        except ArtifactfsError as e:
            return protocol.refusal(str(e), errno_for(e))
        except ValueError as e:
            return protocol.refusal(f"bad request: {e}", 22)


class UidSlots:
    """A :class:`trio.CapacityLimiter` per uid: one user's requests queue behind his own,
    never behind another user's."""

    def __init__(self, per_uid: int) -> None:
        self.per_uid = per_uid
        self._limiters: dict[int, trio.CapacityLimiter] = {}

    def __call__(self, uid: int) -> trio.CapacityLimiter:
        import trio

        lim = self._limiters.get(uid)
        if lim is None:
            lim = self._limiters[uid] = trio.CapacityLimiter(self.per_uid)
        return lim


CONNECT_TIMEOUT = 10.0


def request(path: str, doc: dict[str, Any], timeout: float | None = 30.0,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Send one request to a daemon (blocking) and return its reply.

    Transport failures raise :class:`ArtifactfsError`; a refusal raises the ``errors.py`` class
    the daemon named (``kind``), so ``error: …`` lines and exit codes match a local failure.
    ``timeout`` bounds the reply (``None``: a commit takes as long as its changed bytes need).
    With ``on_progress`` the request asks for progress lines and each one is handed to it.
    """
    if on_progress is not None:
        doc = {**doc, "progress": True}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(path)
            _check_daemon(s, path)
            s.settimeout(timeout)
            try:
                s.sendall(protocol.encode(doc))
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once (too many connections): its reason is waiting below
            reply = _read_reply(s, path, on_progress)
        except OSError as e:
            raise ArtifactfsError(f"the mount daemon did not answer on {path}: "
                                  f"{e.strerror or e}") from None
    return protocol.raise_for(reply)


def _check_daemon(s: socket.socket, path: str) -> None:
    """Talk only to a daemon run by root or by this user (``SO_PEERCRED`` of the listener, from
    the kernel): a socket another user planted never gets a request."""
    _pid, uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       struct.calcsize("3i")))
    if uid not in (0, os.geteuid()):
        raise errors.PermissionDenied(f"refusing the control socket {path}: its daemon runs "
                                      f"as uid {uid}, neither root nor you")


def _read_reply(s: socket.socket, path: str,
                on_progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Lines until the one with ``"ok"`` (the reply); the others go to ``on_progress``."""
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ArtifactfsError(f"the mount daemon on {path} closed the connection "
                                      "without a reply")
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        try:
            doc = protocol.decode(line)
        except ValueError:
            raise ArtifactfsError(f"bad reply from the mount daemon on {path}") from None
        if not isinstance(doc, dict):
            raise ArtifactfsError(f"bad reply from the mount daemon on {path}")
        if protocol.is_reply(doc):
            return doc
        if on_progress is not None:
            on_progress(doc)
