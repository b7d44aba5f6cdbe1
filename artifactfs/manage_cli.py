"""``artifactfs alias``, ``delete``, ``ttl`` and ``gc``: the commands that change what is kept.

Click commands over the catalog and gc.py; ``cli.py`` registers every command found here.
Each takes ``--json`` (shapes in docs/cli.md).  Imported by every CLI run: nothing heavy at
module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .clikit import Ctx, echo_json, fmt_size, json_option, pass_ctx
from .completion import complete_name, complete_ref
from .errors import UsageError
from .names import check_alias, check_project


def _say(as_json: bool, doc: dict[str, Any], text: str) -> None:
    if as_json:
        echo_json(doc)
    else:
        click.echo(text)


@click.group()
def alias() -> None:
    """Move or drop custom aliases."""


@alias.command("add")
@click.argument("ref", metavar="[PROJECT/]NAME:REF", shell_complete=complete_ref)
@click.argument("name", metavar="ALIAS")
@json_option
@pass_ctx
def alias_add(c: Ctx, ref: str, name: str, as_json: bool) -> None:
    """Point ALIAS at a version (moving it if it exists)."""
    check_alias(name)
    rec = c.repo.resolve(c.ref(ref))
    c.repo.catalog.set_alias(rec.project, rec.name, rec.version, name)
    _say(as_json, {"artifact": rec.ref.collection, "alias": name, "version": rec.version},
         f"{rec.project}/{rec.name}:{name} -> v{rec.version}")


@alias.command("rm")
@click.argument("artifact", metavar="[PROJECT/]NAME", shell_complete=complete_name)
@click.argument("name", metavar="ALIAS")
@json_option
@pass_ctx
def alias_rm(c: Ctx, artifact: str, name: str, as_json: bool) -> None:
    """Drop a custom alias."""
    ref = c.ref(artifact, allow_ref=False)
    c.repo.catalog.remove_alias(ref.project, ref.name, name)
    _say(as_json, {"artifact": ref.collection, "alias": name, "version": None},
         f"removed alias {name} from {ref.collection}")


@click.command()
@click.argument("ref", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@click.option("--delete-aliases", is_flag=True, help="Also drop custom aliases it holds.")
@json_option
@pass_ctx
def delete(c: Ctx, ref: str, delete_aliases: bool, as_json: bool) -> None:
    """Soft-delete a version (NAME:REF) or a whole artifact (NAME)."""
    r = c.ref(ref)
    cat = c.repo.catalog
    if ":" not in ref:
        from .discovery import delete_collection  # marks it deleted: the name may be reused
        n = delete_collection(c.repo, r.project, r.name, delete_aliases)
        _say(as_json, {"artifact": r.collection, "deleted": n},
             f"deleted {r.collection} ({n} versions)")
        return
    rec = c.repo.resolve(r)
    cat.delete_version(rec.project, rec.name, rec.version, delete_aliases)
    _say(as_json, {"artifact": rec.label, "deleted": 1}, f"deleted {rec.label}")


@click.group()
def ttl() -> None:
    """Retention: versions older than their TTL are soft-deleted."""


def _days(value: str) -> float:
    try:
        d = float(value)
    except ValueError:
        raise UsageError(f"invalid number of days {value!r}") from None
    if d <= 0:
        raise UsageError(f"invalid number of days {value!r}: must be positive")
    return d


@ttl.command("set")
@click.argument("ref", metavar="[PROJECT/]NAME:REF", shell_complete=complete_ref)
@click.argument("days")
@json_option
@pass_ctx
def ttl_set(c: Ctx, ref: str, days: str, as_json: bool) -> None:
    """Give one version a TTL in days."""
    rec = c.repo.resolve(c.ref(ref))
    rec = c.repo.catalog.set_ttl(rec.project, rec.name, rec.version, _days(days))
    _say(as_json, {"artifact": rec.label, "ttl_days": rec.ttl_days},
         f"{rec.label} ttl {days} days")


@ttl.command("set-default")
@click.argument("project")
@click.argument("days")
@json_option
@pass_ctx
def ttl_set_default(c: Ctx, project: str, days: str, as_json: bool) -> None:
    """Default TTL for the project's versions without their own."""
    c.repo.catalog.set_project_ttl(check_project(project), _days(days))
    _say(as_json, {"project": project, "ttl_days": _days(days)},
         f"{project} default ttl {days} days")


@ttl.command("clear")
@click.argument("target", metavar="[PROJECT/]NAME:REF | PROJECT", shell_complete=complete_ref)
@json_option
@pass_ctx
def ttl_clear(c: Ctx, target: str, as_json: bool) -> None:
    """Clear a version's TTL (NAME:REF) or a project's default (PROJECT)."""
    if "/" in target or ":" in target:
        rec = c.repo.resolve(c.ref(target))
        c.repo.catalog.set_ttl(rec.project, rec.name, rec.version, None)
        _say(as_json, {"artifact": rec.label, "ttl_days": None}, f"{rec.label} ttl cleared")
    else:
        c.repo.catalog.set_project_ttl(check_project(target), None)
        _say(as_json, {"project": target, "ttl_days": None}, f"{target} default ttl cleared")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--grace", default=24.0, show_default=True, metavar="HOURS",
              help="Keep objects younger than this, and those of versions deleted since.")
@click.option("--force", is_flag=True, help="Allow a grace period below one hour.")
@json_option
@pass_ctx
def gc(c: Ctx, dry_run: bool, grace: float, force: bool, as_json: bool) -> None:
    """Remove store objects that no live version or distributed draft needs."""
    from . import gc as gc_mod
    if grace < 0:
        raise UsageError(f"invalid grace period {grace!r}: must not be negative")
    if grace * 3600 < gc_mod.SAFE_GRACE_SECONDS:
        if not force:
            raise UsageError("a grace period below 1 hour can take the content of drafts based "
                             "on versions deleted meanwhile (drafts on other nodes are not "
                             "visible in the store): pass --force to run it anyway")
        click.echo(f"warning: grace period {grace:g} h: drafts based on versions deleted less "
                   "than an hour ago may lose their base content", err=True)
    try:
        r = gc_mod.collect(c.repo, grace * 3600, dry_run, waiting=_gc_waiting())
    except gc_mod.GcFailed as e:
        for p in e.report.problems:
            click.echo(f"gc: could not read {p}", err=True)
        raise
    if as_json:
        echo_json({"dry_run": dry_run, "objects": r.objects, "reachable": r.reachable,
                   "deleted": r.deleted, "bytes_freed": r.bytes_freed,
                   "kept_young": r.kept_young, "leftovers": r.leftovers,
                   "leftover_bytes": r.leftover_bytes, "waited_for": r.waited_for,
                   "problems": r.problems})
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{r.objects} objects, {r.reachable} needed, {verb} {r.deleted} "
               f"({fmt_size(r.bytes_freed)}), kept {r.kept_young} younger than the grace period")
    if r.leftovers:
        click.echo(f"{verb} {r.leftovers} temp file(s) or unfinished upload(s) of writers that "
                   f"died ({fmt_size(r.leftover_bytes)})")


def _gc_waiting() -> Callable[[list[Any]], None]:
    """Says once on stderr which writers in flight gc waits for."""
    said: set[str] = set()

    def show(leases: list[Any]) -> None:
        for le in leases:
            if le.id not in said:
                said.add(le.id)
                click.echo(f"gc: waiting for a writer in flight: {le.describe()}", err=True)

    return show


__all__ = ["alias", "delete", "gc", "ttl"]
