"""The ``artifactfs`` command line: parse, call, print.  No logic lives here.

Every :class:`ArtifactfsError` becomes one line ``error: …`` on stderr and exit status 1;
usage errors exit 2 (click's convention); nothing prints a traceback for a user mistake.
The last line on stdout of a command that names a version is ``PROJECT/NAME:vN``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from . import config as config_mod
from .errors import ArtifactfsError, UsageError
from .names import Ref, check_alias, parse_metadata, parse_ref

if TYPE_CHECKING:
    from .repo import Repo


class Ctx:
    """What every command receives: the resolved configuration and a lazily opened repo."""

    def __init__(self, cfg: config_mod.Config) -> None:
        self.config = cfg
        self._repo: Repo | None = None

    @property
    def repo(self) -> Repo:
        """The store's repo; a directory store must exist (see :meth:`open_repo`)."""
        return self.open_repo(create=False)

    def open_repo(self, create: bool) -> Repo:
        """The repo, opened once; ``create`` lets a command that writes (``put``) make a new
        directory store, for the others a missing one is an error, not a new empty store."""
        if self._repo is None:
            from .repo import Repo  # not imported for commands that only talk to a daemon

            if not create:
                config_mod.check_store_exists(self.config.store)
            self._repo = Repo(self.config.store, notify_mounts=True)
        return self._repo


pass_ctx = click.make_pass_decorator(Ctx)
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def _fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total or 0, label=label, file=sys.stderr,
                           show_eta=True, show_percent=True) as bar:
        yield bar.update


class _Commands(click.Group):
    """The top-level group: an unknown command is a usage error naming the close ones.

    Nothing else is accepted in a command's place: the fstab form ``STORE MOUNT -o OPTIONS``
    belongs to ``mount.artifactfs`` alone (a typo must never mount a store over a directory).
    """

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        if name.startswith("-") or self.get_command(ctx, name) is not None \
                or ctx.resilient_parsing:
            return super().resolve_command(ctx, args)
        msg = f"no such command {name!r}"
        close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
        if close:
            msg += f"; did you mean {' or '.join(close)}?"
        elif "/" in name or name.startswith("."):
            msg += "; fstab lines of type fuse.artifactfs need mount.fuse.artifactfs " \
                   "(see docs/mount.md)"
        raise click.UsageError(msg, ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", metavar="URI", help="Store: a directory or s3://bucket[/prefix] "
              "(default: $ARTIFACTFS_STORE, the config file, then ~/.local/share/artifactfs/store).")
@click.option("--config", "config_file", metavar="FILE", help="Read this config file instead.")
@click.version_option(package_name="artifactfs")
@click.pass_context
def cli(ctx: click.Context, store: str | None, config_file: str | None) -> None:
    """Versioned ML artifacts as a lazy, verified filesystem."""
    cfg = config_mod.load(config_file).with_flags(store=store)
    ctx.obj = Ctx(cfg)


@cli.command()
@click.argument("path")
@click.option("--name", "target", required=True, metavar="PROJECT/NAME")
@click.option("--type", "type_", required=True, metavar="TYPE")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS")
@click.option("--description", default="")
@click.option("--metadata", metavar="JSON")
@click.option("--path-name", metavar="NAME", help="Path of a single file inside the artifact.")
@click.option("--follow-symlinks", is_flag=True, help="Store the targets' bytes, not links.")
@click.option("--checksum/--no-checksum", default=True, help="For references: record checksums.")
@click.option("--max-objects", default=10000, show_default=True, help="For references.")
@click.option("--rehash", is_flag=True, help="Read and hash every file, even those unchanged "
              "(same stat) since an earlier put whose digest the latest version holds.")
@pass_ctx
def put(c: Ctx, path: str, target: str, type_: str, aliases: tuple[str, ...], description: str,
        metadata: str | None, path_name: str | None, follow_symlinks: bool, checksum: bool,
        max_objects: int, rehash: bool) -> None:
    """Store a file, a directory or a reference URI as the next version."""
    ref = parse_ref(target, allow_ref=False)
    meta = parse_metadata(metadata)
    for a in aliases:
        check_alias(a)
    repo = c.open_repo(create=True)
    if _URI_RE.match(path):
        from . import refs
        repo.check_type(ref.project, ref.name, type_)
        entries = dict(refs.expand(path, path_name, checksum=checksum, max_objects=max_objects))
        rec, created = repo.commit_entries(ref.project, ref.name, type_, entries,
                                           aliases=aliases, description=description,
                                           metadata=meta)
    else:
        from .statcache import StatCache
        hints = None if rehash else StatCache(os.path.join(c.config.cache_dir, "put-hints.db"))
        total = _tree_size(path)
        try:
            with _progress(f"put {ref.collection}", total) as bar:
                rec, created = repo.put_path(
                    path, ref.project, ref.name, type_, path_name=path_name,
                    follow_symlinks=follow_symlinks, progress=bar, hints=hints, aliases=aliases,
                    description=description, metadata=meta)
        finally:
            if hints is not None:
                hints.close()
    if not created:
        click.echo(f"unchanged: content equals {rec.label}", err=True)
    click.echo(rec.label)


def _tree_size(path: str) -> int | None:
    if not sys.stderr.isatty():
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@cli.command()
@click.argument("ref")
@click.option("--root", metavar="DIR", help="Destination (default ./artifacts/NAME:vN).")
@click.option("--path-prefix", metavar="P", help="Only entries whose path starts with P.")
@click.option("--lock", "lock_file", metavar="FILE",
              help="Resolve aliases to the versions this lock file pins (artifactfs lock).")
@pass_ctx
def get(c: Ctx, ref: str, root: str | None, path_prefix: str | None,
        lock_file: str | None) -> None:
    """Download a version (or the files under a prefix)."""
    if lock_file:
        from .lockfile import Lock
        c.repo.catalog.pins = Lock.load(lock_file)
    rec = c.repo.resolve(ref)
    root = root or os.path.join("artifacts", f"{rec.name}:v{rec.version}")
    with _progress(f"get {rec.label}", rec.size if not path_prefix else None) as bar:
        c.repo.download(rec, root, path_prefix, bar)
    click.echo(os.path.abspath(root))


@cli.command()
@click.argument("artifact")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def versions(c: Ctx, artifact: str, as_json: bool) -> None:
    """The live versions of an artifact."""
    ref = parse_ref(artifact, allow_ref=False)
    docs = c.repo.versions_json(ref.project, ref.name)
    if as_json:
        _echo_json(docs)
        return
    for d in docs:
        click.echo(f"v{d['version']:<5} {','.join(d['aliases']):<20} {_fmt_size(d['size']):>10} "
                   f"{d['file_count']:>7} files  {d['created_at']}")


@cli.command("ls")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def ls_cmd(c: Ctx, ref: str, as_json: bool) -> None:
    """The entries of a version."""
    rec = c.repo.resolve(ref)
    docs = c.repo.ls_json(rec)
    if as_json:
        _echo_json(docs)
        return
    for d in docs:
        extra = f" -> {d['ref']}" if "ref" in d else f" -> {d['target']}" if "target" in d else ""
        click.echo(f"{_fmt_size(d['size']):>10}  {d['path']}{extra}")


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def info(c: Ctx, ref: str, as_json: bool) -> None:
    """One version's record."""
    rec = c.repo.resolve(ref)
    doc = c.repo.version_json(rec)
    if as_json:
        _echo_json(doc)
        return
    for k, v in doc.items():
        if isinstance(v, list):
            v = ",".join(map(str, v))
        elif isinstance(v, dict):
            v = json.dumps(v)
        click.echo(f"{k:<12} {'' if v is None else v}")


@cli.group()
def alias() -> None:
    """Move or drop custom aliases."""


@alias.command("add")
@click.argument("ref")
@click.argument("name")
@pass_ctx
def alias_add(c: Ctx, ref: str, name: str) -> None:
    """Point ALIAS at PROJECT/NAME:REF (moving it if it exists)."""
    check_alias(name)
    rec = c.repo.resolve(ref)
    c.repo.catalog.set_alias(rec.project, rec.name, rec.version, name)
    click.echo(f"{rec.project}/{rec.name}:{name} -> v{rec.version}")


@alias.command("rm")
@click.argument("artifact")
@click.argument("name")
@pass_ctx
def alias_rm(c: Ctx, artifact: str, name: str) -> None:
    """Drop a custom alias."""
    ref = parse_ref(artifact, allow_ref=False)
    c.repo.catalog.remove_alias(ref.project, ref.name, name)
    click.echo(f"removed alias {name} from {ref.collection}")


@cli.command()
@click.argument("ref")
@click.option("--delete-aliases", is_flag=True, help="Also drop custom aliases it holds.")
@pass_ctx
def delete(c: Ctx, ref: str, delete_aliases: bool) -> None:
    """Soft-delete a version (PROJECT/NAME:REF) or a whole artifact (PROJECT/NAME)."""
    r = parse_ref(ref)
    cat = c.repo.catalog
    if ":" not in ref:
        n = cat.delete_collection(r.project, r.name, delete_aliases)
        click.echo(f"deleted {r.collection} ({n} versions)")
        return
    rec = c.repo.resolve(r)
    cat.delete_version(rec.project, rec.name, rec.version, delete_aliases)
    click.echo(f"deleted {rec.label}")


@cli.group()
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
@click.argument("ref")
@click.argument("days")
@pass_ctx
def ttl_set(c: Ctx, ref: str, days: str) -> None:
    """Give one version a TTL in days."""
    rec = c.repo.resolve(ref)
    c.repo.catalog.set_ttl(rec.project, rec.name, rec.version, _days(days))
    click.echo(f"{rec.label} ttl {days} days")


@ttl.command("set-default")
@click.argument("project")
@click.argument("days")
@pass_ctx
def ttl_set_default(c: Ctx, project: str, days: str) -> None:
    """Default TTL for the project's versions without their own."""
    c.repo.catalog.set_project_ttl(project, _days(days))
    click.echo(f"{project} default ttl {days} days")


@ttl.command("clear")
@click.argument("target")
@pass_ctx
def ttl_clear(c: Ctx, target: str) -> None:
    """Clear a version's TTL (PROJECT/NAME:REF) or a project's default (PROJECT)."""
    if "/" in target:
        rec = c.repo.resolve(target)
        c.repo.catalog.set_ttl(rec.project, rec.name, rec.version, None)
        click.echo(f"{rec.label} ttl cleared")
    else:
        c.repo.catalog.set_project_ttl(target, None)
        click.echo(f"{target} default ttl cleared")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--grace", default=24.0, show_default=True, metavar="HOURS",
              help="Keep objects younger than this, and those of versions deleted since.")
@pass_ctx
def gc(c: Ctx, dry_run: bool, grace: float) -> None:
    """Remove store objects that no live version or distributed draft needs."""
    from . import gc as gc_mod
    if grace < 0:
        raise UsageError(f"invalid grace period {grace!r}: must not be negative")
    r = gc_mod.collect(c.repo, grace * 3600, dry_run)
    verb = "would remove" if dry_run else "removed"
    for p in r.problems:
        click.echo(f"warning: {p}", err=True)
    click.echo(f"{r.objects} objects, {r.reachable} needed, {verb} {r.deleted} "
               f"({_fmt_size(r.bytes_freed)}), kept {r.kept_young} younger than the grace period")


def _register_optional() -> None:
    """Commands that live with their subsystems: the mount daemon's and the drafts'."""
    for module in (".fs.cli_mount", ".drafts_cli", ".repro_cli"):
        try:
            found = importlib.util.find_spec(module, __package__) is not None
        except ModuleNotFoundError:  # its parent package is not in this build
            found = False
        if not found:
            continue
        mod = importlib.import_module(module, __package__)
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, click.Command) and obj.name and obj.name not in cli.commands:
                cli.add_command(obj)


_register_optional()


def _usage_message(e: click.UsageError) -> str:
    """Click's message for a usage error as one lower-case clause, e.g. ``missing option
    --name`` (click writes ``Missing option '--name'.`` under a usage banner)."""
    if isinstance(e, click.MissingParameter) and e.param is not None:
        p = e.param
        what = (f"option {max(p.opts, key=len)}" if isinstance(p, click.Option)
                else f"argument {p.human_readable_name}")
        return f"missing {what}"
    if isinstance(e, click.NoSuchOption):
        close = getattr(e, "possibilities", None)
        return f"no such option {e.option_name}" + (
            f"; did you mean {' or '.join(sorted(close))}?" if close else "")
    msg = " ".join(e.format_message().split())
    msg = re.sub(r"'(--?[A-Za-z][\w-]*)'", r"\1", msg).rstrip(".")
    return msg[:1].lower() + msg[1:] if msg[1:2].islower() else msg


def _show_usage_error(e: click.UsageError) -> None:
    where = f" ({e.ctx.command_path} --help)" if e.ctx is not None else ""
    click.echo(f"error: {_usage_message(e)}{where}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into ``error: …`` lines."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="artifactfs", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        if e.ctx is not None and type(e).__name__ == "NoArgsIsHelpError":
            click.echo(e.ctx.get_help())  # a bare group: its help, as click >= 8.2 says
            sys.exit(0)
        _show_usage_error(e)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {_usage_message(click.UsageError(e.format_message()))}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except ArtifactfsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


__all__ = ["Ref", "cli", "main"]
