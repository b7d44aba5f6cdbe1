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
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import click

from . import config as config_mod
from .clikit import Ctx, echo_json, fmt_size, json_option, pass_ctx, progress
from .completion import complete_name, complete_ref
from .errors import ArtifactfsError, InvalidName, UsageError
from .names import Ref, check_alias, check_name, parse_metadata
from .safetext import escape

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
COMMAND_MODULES = (".manage_cli", ".mount.cli", ".drafts_cli", ".repro_cli", ".completion",
                   ".inspect_cli")


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
@click.argument("path", type=click.Path(), metavar="PATH|URI")
@click.option("--name", "-n", "target", metavar="[PROJECT/]NAME", shell_complete=complete_name,
              help="Default: PATH's base name, in the default project.")
@click.option("--type", "-t", "type_", default="dataset", show_default=True, metavar="TYPE")
@click.option("--alias", "-a", "aliases", multiple=True, metavar="ALIAS")
@click.option("--description", "-d", default="")
@click.option("--metadata", metavar="JSON")
@click.option("--path-name", metavar="NAME", help="Path of a single file inside the artifact.")
@click.option("--follow-symlinks", is_flag=True, help="Store the targets' bytes, not links.")
@click.option("--checksum/--no-checksum", default=True, help="For references: record checksums.")
@click.option("--max-objects", default=10000, show_default=True, help="For references.")
@click.option("--rehash", is_flag=True, help="Read and hash every file, even those unchanged "
              "(same stat) since an earlier put whose digest the latest version holds.")
@json_option
@pass_ctx
def put(c: Ctx, path: str, target: str | None, type_: str, aliases: tuple[str, ...],
        description: str, metadata: str | None, path_name: str | None, follow_symlinks: bool,
        checksum: bool, max_objects: int, rehash: bool, as_json: bool) -> None:
    """Store a file, a directory or a reference URI as the next version (as `wandb artifact
    put`: named after PATH in the default project, type dataset, unless told)."""
    ref = c.ref(target if target is not None else _default_name(path), allow_ref=False)
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
        from .dlcache import HINTS_FILE
        from .statcache import StatCache
        hints = None if rehash else StatCache(os.path.join(c.config.cache_dir, HINTS_FILE))
        total = _tree_size(path)
        try:
            with progress(f"put {ref.collection}", total) as bar:
                rec, created = repo.put_path(
                    path, ref.project, ref.name, type_, path_name=path_name,
                    follow_symlinks=follow_symlinks, progress=bar, hints=hints, aliases=aliases,
                    description=description, metadata=meta)
        finally:
            if hints is not None:
                hints.close()
    if not created:
        click.echo(f"unchanged: content equals {rec.label}", err=True)
    if as_json:
        echo_json({**repo.version_json(rec), "created": created})
    else:
        click.echo(rec.label)


def _default_name(path: str) -> str:
    """The artifact name ``put PATH`` takes without ``--name``: PATH's base name."""
    if _URI_RE.match(path):
        parts = urlsplit(path)
        base = parts.path.rstrip("/").rpartition("/")[2] or parts.netloc
    else:
        base = os.path.basename(os.path.abspath(path))
    try:
        return check_name(base, "artifact name")
    except InvalidName as e:
        raise UsageError(f"{e} (named after {path}): pass --name") from None


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
@click.argument("ref", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@click.option("--root", metavar="DIR", type=click.Path(file_okay=False),
              help="Destination (default ./artifacts/NAME:vN).")
@click.option("--path-prefix", metavar="P", help="Only entries whose path starts with P.")
@click.option("--lock", "lock_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Resolve aliases to the versions this lock file pins (artifactfs lock).")
@click.option("--skip-cache", is_flag=True, help="Fetch every byte from the store: reuse "
              "nothing already on this node (files in the root, other copies, the cache).")
@json_option
@pass_ctx
def get(c: Ctx, ref: str, root: str | None, path_prefix: str | None, lock_file: str | None,
        skip_cache: bool, as_json: bool) -> None:
    """Download a version (or the files under a prefix); the last line is the directory.
    What is on this node already (files in the root, other local copies, the content cache)
    is not fetched again; stderr says what was fetched, copied and kept."""
    from .dlcache import Reuse
    if lock_file:
        from .lockfile import Lock
        c.repo.catalog.pins = Lock.load(lock_file)
    rec = c.repo.resolve(c.ref(ref))
    root = os.path.abspath(root or os.path.join("artifacts", f"{rec.name}:v{rec.version}"))
    reuse = Reuse.open(c.config.cache_dir, skip_cache)
    with reuse, progress(f"get {rec.label}", rec.size if not path_prefix else None) as bar:
        n = c.repo.download(rec, root, path_prefix, bar, reuse)
    k = reuse.counts
    if as_json:
        echo_json({"ref": rec.label, "root": root, "files": n, "fetched_bytes": k.fetched,
                   "copied_bytes": k.copied, "kept_bytes": k.kept, "kept_files": k.files_kept})
        return
    click.echo(f"fetched {fmt_size(k.fetched)}, copied {fmt_size(k.copied)} from this node, "
               f"kept {k.files_kept} files ({fmt_size(k.kept)}) already in place", err=True)
    click.echo(root)


@cli.command()
@click.argument("artifact", metavar="[PROJECT/]NAME", shell_complete=complete_name)
@json_option
@pass_ctx
def versions(c: Ctx, artifact: str, as_json: bool) -> None:
    """The live versions of an artifact."""
    ref = c.ref(artifact, allow_ref=False)
    warnings: list[str] = []
    docs = c.repo.versions_json(ref.project, ref.name, warnings)
    for w in warnings:  # damaged records: the others are still listed
        click.echo(escape(f"warning: {w}"), err=True)
    if as_json:
        echo_json(docs)
        return
    for d in docs:
        click.echo(f"v{d['version']:<5} {','.join(d['aliases']):<20} {fmt_size(d['size']):>10} "
                   f"{d['file_count']:>7} files  {escape(str(d['created_at']))}")


def echo_json_list(items: Iterable[Any]) -> None:
    """What ``echo_json(list(items))`` prints, one item at a time."""
    first = True
    for d in items:
        body = json.dumps(d, indent=2).replace("\n", "\n  ")
        click.echo(("[\n  " if first else ",\n  ") + body, nl=False)
        first = False
    click.echo("[]" if first else "\n]")


@cli.command("ls")
@click.argument("ref", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@json_option
@pass_ctx
def ls_cmd(c: Ctx, ref: str, as_json: bool) -> None:
    """The entries of a version ([PROJECT/]NAME[:REF]), or the artifacts of a PROJECT."""
    from . import inspect_cli
    if inspect_cli.is_project(c, ref):
        inspect_cli.ls_project(c, ref, as_json)
        return
    rec = c.repo.resolve(c.ref(ref))
    docs = c.repo.ls_docs(rec)  # streamed: a million entries print in bounded memory
    if as_json:
        echo_json_list(docs)
        return
    for d in docs:
        extra = f" -> {d['ref']}" if "ref" in d else f" -> {d['target']}" if "target" in d else ""
        click.echo(escape(f"{fmt_size(d['size']):>10}  {d['path']}{extra}"))


@cli.command()
@click.argument("ref", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@json_option
@pass_ctx
def info(c: Ctx, ref: str, as_json: bool) -> None:
    """One version's record."""
    rec = c.repo.resolve(c.ref(ref))
    doc = c.repo.version_json(rec)
    if as_json:
        echo_json(doc)
        return
    for k, v in doc.items():
        if isinstance(v, list):
            v = ",".join(map(str, v))
        elif isinstance(v, dict):
            v = json.dumps(v)
        click.echo(escape(f"{k:<12} {'' if v is None else v}"))


def _register_optional() -> None:
    """Commands that live in their own modules (:data:`COMMAND_MODULES`): the click commands
    a module's ``__all__`` names (without one, all at its top level), unless one of that name
    exists."""
    for module in COMMAND_MODULES:
        try:
            found = importlib.util.find_spec(module, __package__) is not None
        except ModuleNotFoundError:  # its parent package is not in this build
            found = False
        if not found:
            continue
        mod = importlib.import_module(module, __package__)
        for name in getattr(mod, "__all__", None) or dir(mod):
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
    click.echo(escape(f"error: {_usage_message(e)}{where}"), err=True)  # (echoes what was typed)


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
        click.echo(escape(f"error: {_usage_message(click.UsageError(e.format_message()))}"),
                   err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except ArtifactfsError as e:
        click.echo(f"error: {escape(str(e))}", err=True)
        sys.exit(1)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(escape(f"error: {e.strerror or e}{where}"), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


__all__ = ["Ref", "cli", "main"]
