"""``artifactfs verify``, ``diff``, ``digest``, ``search``, ``tag``, ``link`` and ``unlink``,
and ``ls PROJECT`` (the artifacts of a project, next to ``ls REF``, the files of a version).

Thin: parse, call verify.py / diffs.py / discovery.py / links.py, print.  Every command takes
``--json`` (shapes in docs/cli.md); names without a project are in the default project.
``cli.py`` registers the commands found here (``__all__``).
"""

from __future__ import annotations

import os

import click

from .clikit import Ctx, echo_json, json_option, pass_ctx
from .completion import complete_ref
from .errors import IntegrityError, UsageError
from .names import NAME_RE
from .safetext import escape

REF = "[PROJECT/]NAME[:REF]"


@click.command("verify")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("ref", required=False, metavar=REF, shell_complete=complete_ref)
@click.option("--path-prefix", metavar="P", help="Only entries whose path starts with P.")
@click.option("--fast", is_flag=True, help="Trust files whose stat matches a digest record "
              "(as a re-get does) instead of reading every file.")
@click.option("--ignore-extra", is_flag=True, help="Files in ROOT that the version lacks are "
              "fine.")
@json_option
@pass_ctx
def verify_cmd(c: Ctx, root: str, ref: str | None, path_prefix: str | None, fast: bool,
               ignore_extra: bool, as_json: bool) -> None:
    """Check that ROOT holds exactly a version's files (REF, default: the version last
    downloaded into ROOT); exit status 1 when it does not."""
    from . import verify
    from .dlcache import HINTS_FILE
    from .statcache import StatCache
    repo = c.repo
    if not os.path.isdir(root):
        raise UsageError(f"no such directory: {root}")
    hints = StatCache(os.path.join(c.config.cache_dir, HINTS_FILE))
    try:
        if ref is not None:
            rec = repo.resolve(c.ref(ref))
            label, tree_oid = rec.label, rec.root
        else:
            known = hints.root_of(os.path.realpath(root))
            if known is None:
                raise UsageError(f"no version was downloaded into {root} here: give REF")
            label, tree_oid, recorded_prefix = known
            path_prefix = path_prefix or recorded_prefix or None
        report = verify.verify_tree(repo.catalog.load_node, tree_oid, root, path_prefix,
                                    hints if fast else None, extra=not ignore_extra)
    finally:
        hints.close()
    if as_json:
        echo_json({"root": os.path.abspath(root), "version": label, **report.to_json()})
    else:
        for kind in ("missing", "changed", "extra"):
            for p in getattr(report, kind):
                click.echo(escape(f"{kind}: {p}"))
        for p in report.unverifiable:
            click.echo(escape(f"size only (no checksum recorded): {p}"), err=True)
    if not report.ok:
        raise IntegrityError(f"{root} does not match {label}: {report.summary()}")
    if not as_json:
        click.echo(f"ok: {os.path.abspath(root)} matches {label} ({report.checked} entries)")


@click.command("diff")
@click.argument("ref_a", metavar="REF_A", shell_complete=complete_ref)
@click.argument("ref_b", metavar="REF_B", shell_complete=complete_ref)
@json_option
@pass_ctx
def diff_cmd(c: Ctx, ref_a: str, ref_b: str, as_json: bool) -> None:
    """What changed from REF_A to REF_B: added (A), removed (D), changed (M) and renamed (R,
    same content at another path)."""
    from . import diffs
    a, b = c.repo.resolve(c.ref(ref_a)), c.repo.resolve(c.ref(ref_b))
    d = diffs.diff(c.repo.catalog.load_node, a, b)
    if as_json:
        echo_json(d.to_json())
        return
    for line in d.lines():
        click.echo(escape(line))
    if d.same:
        click.echo(f"{a.label} and {b.label} have the same content", err=True)


@click.command("digest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
def digest_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """The digest artifactfs records for local FILES (as `ls --json` shows it) and their
    plain SHA-256: over 8 MiB the two differ."""
    from . import verify
    docs = []
    for f in files:
        if not os.path.isfile(f):
            raise UsageError(f"not a regular file: {f}")
        docs.append(verify.file_digest(f))
    if as_json:
        echo_json(docs)
        return
    for d in docs:
        click.echo(escape(f"{d['digest']}  {d['digest_kind']:<13} sha256={d['sha256']}  "
                          f"{d['path']}"))


def ls_project(c: Ctx, project: str, as_json: bool) -> None:
    """``ls PROJECT``: the project's artifacts (name, type, latest version, tags)."""
    from . import discovery
    repo = c.repo
    docs = []
    for col in discovery.collections(repo, project):
        versions = repo.catalog.version_numbers(project, col.name)
        latest = repo.catalog.latest(project, col.name, versions)
        docs.append({"project": project, "name": col.name, "type": col.type,
                     "latest": f"v{latest.version}" if latest else None,
                     "description": col.description, "tags": list(col.tags),
                     "created_at": col.created_at})
    if as_json:
        echo_json(docs)
        return
    for d in docs:
        tags = f"  [{','.join(d['tags'])}]" if d["tags"] else ""
        click.echo(escape(f"{d['type']:<12} {project}/{d['name']}:{d['latest'] or '-'}{tags}"))


def is_project(c: Ctx, arg: str) -> bool:
    """Whether ``ls ARG`` means a project: a bare name that names one (a project wins over
    an artifact of the same name in the default project)."""
    from . import discovery
    return "/" not in arg and ":" not in arg and bool(NAME_RE.fullmatch(arg)) and \
        arg in discovery.projects(c.repo)


@click.command("search")
@click.option("--tag", "tag", required=True, metavar="TAG")
@click.option("--project", metavar="PROJECT", help="Only this project.")
@json_option
@pass_ctx
def search_cmd(c: Ctx, tag: str, project: str | None, as_json: bool) -> None:
    """Versions and artifacts carrying TAG."""
    from . import discovery
    found = discovery.search(c.repo, tag, project)
    if as_json:
        echo_json({"versions": [c.repo.version_json(r) for r in found.versions],
                    "artifacts": [{"project": col.project, "name": col.name, "type": col.type,
                                   "tags": list(col.tags)} for col in found.collections]})
        return
    for col in found.collections:
        click.echo(escape(f"artifact {col.project}/{col.name} ({col.type})"))
    for r in found.versions:
        click.echo(escape(f"version  {r.label} ({r.type})"))


@click.group("tag")
def tag() -> None:
    """Tags on versions (PROJECT/NAME:REF) and artifacts (PROJECT/NAME)."""


def _retag(c: Ctx, target: str, add: tuple[str, ...], remove: tuple[str, ...],
           as_json: bool) -> None:
    from . import discovery
    repo = c.repo
    if ":" in target:
        rec = repo.resolve(c.ref(target))
        label = rec.label
        tags = discovery.set_version_tags(repo, rec, (set(rec.tags) | set(add)) - set(remove)).tags
    else:
        ref = c.ref(target, allow_ref=False)
        col = repo.catalog.get_collection(ref.project, ref.name)
        label = ref.collection
        tags = list(discovery.edit_collection(repo, ref.project, ref.name,
                                              tags=(set(col.tags) | set(add)) - set(remove)).tags)
    if as_json:
        echo_json({"target": label, "tags": list(tags)})
    else:
        click.echo(escape(f"{label}: {','.join(tags)}"))


@tag.command("add")
@click.argument("target", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@click.argument("tags", nargs=-1, required=True)
@json_option
@pass_ctx
def tag_add(c: Ctx, target: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Add TAGS to a version (NAME:REF) or an artifact (NAME)."""
    _retag(c, target, tags, (), as_json)


@tag.command("rm")
@click.argument("target", metavar="[PROJECT/]NAME[:REF]", shell_complete=complete_ref)
@click.argument("tags", nargs=-1, required=True)
@json_option
@pass_ctx
def tag_rm(c: Ctx, target: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Remove TAGS from a version (NAME:REF) or an artifact (NAME)."""
    _retag(c, target, (), tags, as_json)


@click.command("link")
@click.argument("ref", metavar=REF, shell_complete=complete_ref)
@click.argument("target")
@click.option("--alias", "-a", "aliases", multiple=True, metavar="ALIAS")
@json_option
@pass_ctx
def link_cmd(c: Ctx, ref: str, target: str, aliases: tuple[str, ...], as_json: bool) -> None:
    """Link version REF into the registry as TARGET (COLLECTION or registry/COLLECTION);
    nothing is copied.  Prints registry/COLLECTION:vN."""
    from . import links
    rec = links.link(c.repo, c.repo.resolve(c.ref(ref)), links.parse_target(target),
                     list(aliases))
    if as_json:
        echo_json({"ref": rec.label, "source": rec.source,
                   "aliases": c.repo.catalog.aliases_of(rec)})
    else:
        click.echo(rec.label)


@click.command("unlink")
@click.argument("ref", metavar="registry/COLLECTION[:REF]", shell_complete=complete_ref)
@json_option
@pass_ctx
def unlink_cmd(c: Ctx, ref: str, as_json: bool) -> None:
    """Remove a registry link; its source is untouched."""
    from . import links
    rec = c.repo.resolve(c.ref(ref))
    links.unlink(c.repo, rec)
    if as_json:
        echo_json({"ref": rec.label, "source": rec.source})
    else:
        click.echo(f"unlinked {rec.label} (was {rec.source})")


__all__ = ["diff_cmd", "digest_cmd", "link_cmd", "search_cmd", "tag", "unlink_cmd",
           "verify_cmd"]
