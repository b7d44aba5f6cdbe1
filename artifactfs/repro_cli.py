"""``artifactfs lock``, ``lineage``, ``import-wandb`` and ``export-wandb``: click commands over
lockfile.py, lineage.py and wandb_manifest.py.  ``cli.py`` registers every command found here.

Imported by every CLI run, so nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .errors import UsageError
from .names import check_alias, parse_metadata, parse_ref


def _ctx() -> Any:
    return click.get_current_context().find_root().obj


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


@click.command()
@click.argument("items", nargs=-1, required=True, metavar="REF|PATH...")
@click.option("--output", "-o", default="artifacts.lock", show_default=True, metavar="FILE")
def lock(items: tuple[str, ...], output: str) -> None:
    """Pin aliases to the exact versions they name now, in a lock file.

    Each REF is PROJECT/NAME[:ALIAS] (default latest); a PATH inside a mount
    (MOUNT/P/N/ALIAS/...) pins that alias.  `get --lock FILE`, `mount --lock FILE` and
    ARTIFACTFS_LOCK=FILE then resolve those aliases to these versions."""
    from . import lockfile

    repo = _ctx().repo
    repo.catalog.pins = None  # what the names say now, not what an older lock says
    pins = {}
    for item in items:
        ref = _ref_of(item)
        pin = lockfile.pin_of(ref, repo.resolve(ref))
        pins[(pin.project, pin.name, pin.alias)] = pin
    lockfile.write(output, pins.values())
    for p in sorted(pins.values(), key=lambda p: p.label):
        click.echo(f"{p.label} -> v{p.version}", err=True)
    click.echo(output)


def _ref_of(item: str) -> Any:
    """A ref, or the ref a path inside a mount walks through (MOUNT/P/N/ALIAS/...)."""
    from .mount import registry

    if ":" not in item and os.path.lexists(item):
        path = os.path.abspath(item)
        for rec in registry.records():
            mp = rec.mountpoint.rstrip("/") + "/"
            if path.startswith(mp):
                parts = path[len(mp):].split("/")
                if len(parts) >= 3 and parts[0] != "drafts":
                    return parse_ref(f"{parts[0]}/{parts[1]}:{parts[2]}")
        raise UsageError(f"{item} is not a path inside an artifactfs mount (MOUNT/P/N/ALIAS/…)")
    return parse_ref(item)


@click.command()
@click.argument("ref")
@click.option("--depth", default=1, show_default=True, metavar="N",
              help="Run hops to follow from the version, in every direction.")
@click.option("--format", "fmt", default="text", show_default=True,
              type=click.Choice(["text", "json", "dot", "svg", "png"]))
@click.option("--output", "-o", metavar="FILE", help="Write here instead of stdout.")
def lineage(ref: str, depth: int, fmt: str, output: str | None) -> None:
    """The runs and versions around a version: who logged it, who used it, and on."""
    from . import lineage as lineage_mod

    repo = _ctx().repo
    rec = repo.resolve(ref)
    g = lineage_mod.graph(repo.catalog, rec, depth)
    if fmt in ("svg", "png"):
        data = lineage_mod.draw(lineage_mod.dot(g), fmt)
        if output is None and sys.stdout.isatty():
            raise UsageError(f"--format {fmt} writes a picture: give --output FILE")
        _write(output, data)
        if output is not None:
            click.echo(output)
        return
    text = json.dumps(g, indent=2) + "\n" if fmt == "json" else \
        lineage_mod.dot(g) if fmt == "dot" else _text(g)
    _write(output, text.encode())


def _write(output: str | None, data: bytes) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)


def _text(g: dict[str, Any]) -> str:
    nodes = {n["id"]: n for n in g["nodes"]}
    lines = []
    for e in g["edges"]:
        a, b = nodes[e["from"]], nodes[e["to"]]
        run, art, verb = (a, b, "logged") if a["kind"] == "run" else (b, a, "used")
        job = f" ({run['job_type']})" if run.get("job_type") else ""
        lines.append(f"{run['id'].removeprefix('run:')}{job} {verb} {art['id']}")
    if not lines:
        lines.append("no runs recorded")
    if g["truncated"]:
        lines.append(f"(stopped at {len(nodes)} nodes)")
    return "\n".join([*lines, g["artifact"]]) + "\n"


@click.command("import-wandb")
@click.argument("manifest", metavar="MANIFEST.json|DIR")
@click.option("--files", "files_dir", metavar="DIR",
              help="The downloaded files of the manifest's file entries.")
@click.option("--name", "-n", "target", required=True, metavar="PROJECT/NAME")
@click.option("--type", "-t", "type_", default="dataset", show_default=True)
@click.option("--alias", "-a", "aliases", multiple=True, metavar="ALIAS")
@click.option("--description", default="")
@click.option("--metadata", metavar="JSON")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def import_wandb(manifest: str, files_dir: str | None, target: str, type_: str,
                 aliases: tuple[str, ...], description: str, metadata: str | None,
                 as_json: bool) -> None:
    """A W&B artifact manifest (wandb_manifest.json) and its files → the next version.

    Files are checked against the manifest's MD5s and stored; references stay references.
    A directory holding wandb_manifest.json (and files/) works too, as export-wandb writes."""
    from . import wandb_manifest

    ref = parse_ref(target, allow_ref=False)
    meta = parse_metadata(metadata)
    for a in aliases:
        check_alias(a)
    if os.path.isdir(manifest):
        if files_dir is None and os.path.isdir(os.path.join(manifest, "files")):
            files_dir = os.path.join(manifest, "files")
        manifest = os.path.join(manifest, wandb_manifest.MANIFEST)
    repo = _ctx().open_repo(create=True)  # a first import may make the store
    rec, created = wandb_manifest.import_manifest(
        repo, manifest, files_dir, ref.project, ref.name, type_, aliases=aliases,
        description=description, metadata=meta)
    if not created:
        click.echo(f"unchanged: content equals {rec.label}", err=True)
    if as_json:
        _echo_json(repo.version_json(rec))
    else:
        click.echo(rec.label)


@click.command("export-wandb")
@click.argument("ref")
@click.option("--output", "-o", "out_dir", required=True, metavar="DIR",
              help="Writes DIR/files/… and DIR/wandb_manifest.json.")
def export_wandb(ref: str, out_dir: str) -> None:
    """A version → its files and a W&B manifest (`wandb artifact put DIR/files` uploads the
    same files: W&B computes the same MD5s)."""
    from . import wandb_manifest

    repo = _ctx().repo
    rec = repo.resolve(ref)
    os.makedirs(out_dir, exist_ok=True)
    wandb_manifest.export_version(repo, rec, out_dir)
    click.echo(os.path.join(out_dir, wandb_manifest.MANIFEST))
