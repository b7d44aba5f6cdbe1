"""``artifactfs draft …``, ``commit …`` and ``upsert …``: thin clients of a mount's daemon.

Drafts live in the daemon that serves ``MOUNT`` (SPEC §4), so these commands only find that
daemon and send it one JSON request over its control socket (``mount/control.py``; wire format in
docs/control.md).  The daemon checks the caller's uid itself (``SO_PEERCRED``): nothing here is
trusted.  ``cli.py`` registers :data:`draft`, :data:`commit` and :data:`upsert`.

What is subtle: a daemon is found through the mount registry (``RUNTIME/mounts/<id>.json``),
looked up in the caller's runtime directory and then in root's (``/run/artifactfs``), because a
root daemon mounted with ``allow_other`` serves other users too.  Both directories, the records
and the daemon are checked first (``mount/rundir.py``, ``registry.load_record``, and the peer's
uid in ``control.request``): a record or socket planted by another user is refused, never
talked to, since a commit request carries the draft's metadata and its reply names the path
the user writes to.  This module imports neither
trio nor pyfuse3, so a commit costs a small process start plus the daemon's work.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import errors
from .clikit import artifact_ref, echo_json, json_option
from .completion import complete_ref
from .errors import ArtifactfsError, UsageError
from .mount import control as control_socket
from .mount import protocol, registry, rundir
from .names import check_name, check_project, parse_metadata, parse_ref
from .safetext import escape

DEFAULT_WAIT = 30.0  # seconds a commit waits for files of the draft still open for writing


def _runtime_dirs() -> list[tuple[str, int]]:
    """(checked mounts directory, its owner): this user's, then root's.  An unsafe one is an
    error (rundir.py); one that does not exist has no mounts."""
    out = []
    for uid in dict.fromkeys([os.geteuid(), 0]):
        d = rundir.secure_dir(uid)
        if d is not None:
            out.append((d, uid))
    return out


def _record(directory: str, owner: int, name: str) -> registry.MountRecord | None:
    rec = registry.load_record(os.path.join(directory, name), owner)
    return rec if rec is not None and rec.alive else None


def mounts() -> list[tuple[str, str]]:
    """(mountpoint, control socket) of every live mount this user can see."""
    out: dict[str, tuple[str, str]] = {}
    for d, owner in _runtime_dirs():
        for n in sorted(os.listdir(d)):
            rec = _record(d, owner, n) if n.endswith(".json") else None
            if rec is not None:
                out.setdefault(rec.mountpoint, (rec.mountpoint, rec.control))
    return sorted(out.values())


def find_mount(mount: str | None) -> tuple[str, str]:
    """(mountpoint, control socket) for ``--mount`` (or the only mount there is)."""
    if mount is None:
        found = mounts()
        if len(found) == 1:
            return found[0]
        if not found:
            raise ArtifactfsError("no artifactfs mount is running: mount one first, or pass "
                                  "--mount")
        raise UsageError("several artifactfs mounts are running ("
                         + ", ".join(m for m, _ in found) + "): pass --mount")
    for mp in dict.fromkeys([os.path.abspath(mount), os.path.realpath(mount)]):
        for d, owner in _runtime_dirs():
            rec = _record(d, owner, f"{registry.mount_id(mp)}.json")
            if rec is not None:
                return rec.mountpoint, rec.control
    raise ArtifactfsError(f"no artifactfs daemon is serving {mount} (is it mounted?)")


def parse_draft_path(path: str) -> tuple[str, str, str, str]:
    """``MOUNT/drafts/PROJECT/NAME/ID`` → (MOUNT, PROJECT, NAME, ID)."""
    parts = os.path.abspath(path).split("/")
    if len(parts) < 5 or parts[-4] != "drafts":
        raise UsageError(f"{path} is not a draft directory (MOUNT/drafts/PROJECT/NAME/DRAFT)")
    project, name, draft_id = parts[-3:]
    try:
        check_project(project)
        check_name(name, "artifact name")
        check_name(draft_id, "draft id")
    except errors.InvalidName as e:
        raise UsageError(f"{path} is not a draft directory: {e}") from None
    return "/".join(parts[:-4]) or "/", project, name, draft_id


DRAFT_PATH = click.Path(file_okay=False, readable=False)  # completes directories
call = control_socket.request  # one request, one reply (refusals re-raised as their error class)


def _send(path: str, doc: dict[str, Any], timeout: float | None = None,
          progress: str | None = None) -> tuple[str, dict[str, Any]]:
    """One request about the draft at ``path``; ``progress`` labels a progress bar of the bytes
    the daemon stores (shown only when stderr is a terminal)."""
    mount, project, name, draft_id = parse_draft_path(path)
    mp, control = find_mount(mount)
    req = {**doc, "project": project, "name": name, "id": draft_id}
    if progress is None or not sys.stderr.isatty():
        return mp, call(control, req, timeout)
    with _ProgressBar(progress) as bar:
        return mp, call(control, req, timeout, on_progress=bar.update)


class _ProgressBar:
    """A click progress bar fed with the daemon's ``{"progress": DONE, "total": N}`` lines;
    nothing is drawn until a total is known, and it never goes backwards."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.shown = 0

    def __enter__(self) -> _ProgressBar:
        return self

    def update(self, doc: dict[str, Any]) -> None:
        try:
            done, total = int(doc.get("progress", 0)), int(doc.get("total", 0))
        except (TypeError, ValueError):
            return
        if self.bar is None:
            if total <= 0:
                return
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         show_eta=True, show_percent=True)
            self.bar.__enter__()
        if done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


class _DraftGroup(click.Group):
    """``draft PROJECT/NAME[:REF]`` is ``draft create …``; ``draft list``/``discard`` too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


def _draft_group() -> click.Group:
    """Built in a function: ``cli.py`` registers every module-level command it finds here."""

    @click.group(cls=_DraftGroup, options_metavar="",
                 subcommand_metavar="PROJECT/NAME[:REF] [--id ID] [--mount M] | COMMAND")
    def draft() -> None:
        """Writable drafts in MOUNT/drafts/: create one on any version, list, discard."""

    @draft.command("create")
    @click.argument("ref", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
    @click.option("--id", "draft_id", metavar="ID", help="Draft id (default: a new random one).")
    @click.option("--mount", metavar="MOUNT", type=click.Path(file_okay=False),
                  help="The mount to use (default: the only one).")
    @json_option
    def create(ref: str, draft_id: str | None, mount: str | None, as_json: bool) -> None:
        """Create a draft based on REF (default latest; empty for a new artifact); print its
        path."""
        r = artifact_ref(ref)
        if draft_id is not None:
            check_name(draft_id, "draft id")
        mp, control = find_mount(mount)
        reply = call(control, {"op": "draft.create", "project": r.project, "name": r.name,
                               "ref": r.ref if ":" in ref else None, "id": draft_id})
        doc = _draft_doc(mp, reply)
        if as_json:
            echo_json(doc)
        else:
            click.echo(escape(doc["path"]))

    @draft.command("list")
    @click.option("--mount", metavar="MOUNT", type=click.Path(file_okay=False),
                  help="Only this mount (default: every mount).")
    @json_option
    def list_(mount: str | None, as_json: bool) -> None:
        """Your drafts (all drafts, for root)."""
        targets = [find_mount(mount)] if mount else mounts()
        rows: list[dict[str, Any]] = []
        for mp, control in targets:
            try:
                drafts = call(control, {"op": "draft.list"})["drafts"]
            except ArtifactfsError as e:
                if mount:
                    raise
                click.echo(escape(f"warning: {mp}: {e}"), err=True)  # the others still count
                continue
            rows.extend(_draft_doc(mp, d) for d in drafts)
        if as_json:
            echo_json(rows)
            return
        for d in rows:
            click.echo(escape(f"{d['path']}  base={d['base'] or '(empty)'}  {d['created_at']}"))

    @draft.command("discard")
    @click.argument("path", metavar="DRAFT_PATH", type=DRAFT_PATH)
    @json_option
    def discard(path: str, as_json: bool) -> None:
        """Throw a draft away (like rm -r of its directory)."""
        _send(path, {"op": "draft.discard"})
        path = os.path.abspath(path)
        if as_json:
            echo_json({"discarded": path})
        else:
            click.echo(f"discarded {path}")

    return draft


def _draft_doc(mountpoint: str, reply: dict[str, Any]) -> dict[str, Any]:
    """One draft as ``draft create/list --json`` print it (the daemon's fields, absolute path)."""
    keys = ("path", "project", "name", "id", "owner", "created_at", "base")
    return {**{k: reply.get(k) for k in keys},
            "path": os.path.join(mountpoint, str(reply["path"]))}


draft = _draft_group()


@click.command("commit")
@click.argument("path", metavar="DRAFT_PATH", type=DRAFT_PATH)
@click.option("--type", "-t", "type_", metavar="TYPE", help="Needed for a new artifact.")
@click.option("--alias", "-a", "aliases", multiple=True, metavar="ALIAS")
@click.option("--description", "-d", default=None, help="Default: the base version's.")
@click.option("--metadata", metavar="JSON", help="A JSON object (default: the base's).")
@click.option("--run", "run", metavar="RUN_ID", help="The run logging this version.")
@click.option("--input", "inputs", multiple=True, metavar="REF",
              help="A version the run used (needs --run).")
@click.option("--wait", default=DEFAULT_WAIT, metavar="SEC", show_default=True,
              type=click.FloatRange(0, protocol.MAX_WAIT),
              help="Wait this long for files of the draft still open for writing, then fail "
                   "naming them (0: fail at once).")
@json_option
def commit(path: str, type_: str | None, aliases: tuple[str, ...], description: str | None,
           metadata: str | None, run: str | None, inputs: tuple[str, ...], wait: float,
           as_json: bool) -> None:
    """Turn a draft into the next version; the last line printed is PROJECT/NAME:vN."""
    meta = parse_metadata(metadata) if metadata is not None else None
    for ref in inputs:
        parse_ref(ref)
    if inputs and not run:
        raise UsageError("--input needs --run: inputs are recorded on a run")
    _, reply = _send(path, {"op": "commit", "type": type_, "aliases": list(aliases),
                            "description": description, "metadata": meta, "run": run,
                            "inputs": list(inputs), "wait": wait}, progress="commit")
    if not reply.get("created"):
        click.echo(f"unchanged: content equals {reply['label']}", err=True)
    if as_json:
        label = str(reply["label"])
        project, _, rest = label.partition("/")
        echo_json({"ref": label, "project": project, "name": rest.rpartition(":")[0],
                   "version": reply.get("version"), "digest": reply.get("digest"),
                   "created": bool(reply.get("created")),
                   "distributed": bool(reply.get("distributed"))})
    else:
        click.echo(str(reply["label"]))


@click.command("upsert")
@click.argument("path", metavar="DRAFT_PATH", type=DRAFT_PATH)
@click.option("--wait", default=DEFAULT_WAIT, metavar="SEC", show_default=True,
              type=click.FloatRange(0, protocol.MAX_WAIT),
              help="Wait this long for files of the draft still open for writing.")
@json_option
def upsert(path: str, wait: float, as_json: bool) -> None:
    """Add this draft's new and changed files to the distributed draft of its id (in the
    store, shared by every node); the local draft is then gone.  One `artifactfs commit` of a
    draft with the same id, on any node, finishes it."""
    _, reply = _send(path, {"op": "upsert", "wait": wait}, progress="upsert")
    path = os.path.abspath(path)
    if as_json:
        echo_json({"draft": path, "entries": reply["entries"], "writer": reply["writer"]})
    else:
        click.echo(f"upserted {path}: {reply['entries']} entries from writer {reply['writer']}")


__all__ = ["commit", "draft", "upsert"]
