"""One root daemon mounted --allow-other, attacked by real unprivileged users (issue 10, SPEC §9).

Each test replays one way a user could make the daemon act for him with its own authority,
and checks it now fails with the errno or message stated: runtime files (a planted runtime
directory, log files and forged log lines), config mistakes, distributed drafts of two users,
rights that must be re-checked on every call, and a control socket one user could exhaust.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mounthelp import Mount, mounted, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a shared daemon")

# Runs a list of (label, callable) as the user and prints {label: "ok" | value | ERRNO}.
PROBE = """
import errno, json, os, sys
def probe(ops):
    out = {}
    for label, op in ops:
        try:
            r = op()
            out[label] = "ok" if r is None or isinstance(r, int) else r
        except OSError as e:
            out[label] = errno.errorcode[e.errno]
    print(json.dumps(out))
"""


@dataclass
class Shared:
    """A root daemon (--allow-other) over a store only root can write, and its users."""

    top: str
    mount: Mount
    cli: Callable[..., subprocess.CompletedProcess[str]]
    users: Any
    config: Path

    def path(self, *parts: str) -> str:
        return self.mount.path(*parts)

    def probe(self, user: Any, ops: str, env: dict[str, str] | None = None) -> dict[str, str]:
        """``ops``: a Python list of (label, callable) run as ``user``."""
        r = self.users.python(user, PROBE + f"probe({ops})\n", env=env)
        assert r.returncode == 0, r.stderr
        out: dict[str, str] = json.loads(r.stdout)
        return out

    def as_cli(self, user: Any, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        return self.users.cli(user, *args, env=env)


def put(cli: Callable[..., Any], src: Path, name: str = "vision/cats") -> str:
    out: str = cli("put", str(src), "--name", name, "--type", "dataset").stdout
    return out.split()[-1]


@pytest.fixture
def shared(mounter: Callable[..., Mount], cli: Callable[..., Any], env: dict[str, str],
           users: Any, tmp_path: Path) -> Iterator[Callable[..., Shared]]:
    """``shared(config_text)``: puts vision/cats:v0 and secret/cats:v0, writes the config and
    mounts as root with --allow-other in a directory every user can enter."""
    top = tempfile.mkdtemp(prefix="afs-trust-", dir="/tmp")
    os.chmod(top, 0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "README").write_text("hello\n")
    env["ARTIFACTFS_RIGHTS_TTL"] = "1"  # rights and the config are re-read after 1 s
    config = Path(env["XDG_CONFIG_HOME"]) / "artifactfs" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)

    def make(config_text: str = "") -> Shared:
        config.write_text(config_text)
        put(cli, src)
        put(cli, src, "secret/cats")
        m = mounter(os.path.join(top, "mnt"), "--allow-other")
        return Shared(top, m, cli, users, config)

    try:
        yield make
    finally:
        mp = os.path.join(top, "mnt")
        if mounted(mp):
            subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


# --- item 2: a planted runtime directory -----------------------------------------------------

LISTENER = """
import json, os, socket, sys
mounts, mp, mid = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(mounts, mode=0o777)
for d in (mounts, os.path.dirname(mounts), os.path.dirname(os.path.dirname(mounts))):
    os.chmod(d, 0o777)
sock = os.path.join(mounts, mid + ".sock")
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
os.chmod(sock, 0o777)
s.listen(8)
with open(os.path.join(mounts, mid + ".json"), "w") as f:
    json.dump({"mountpoint": mp, "pid": os.getpid(), "store": "x", "cache_dir": "x",
               "control": sock, "log": ""}, f)
os.chmod(os.path.join(mounts, mid + ".json"), 0o666)
print("ready", flush=True)
s.settimeout(8)
try:
    c, _ = s.accept()
    c.settimeout(2)
    print("GOT", c.recv(65536), flush=True)
    c.sendall(b'{"ok": true, "label": "vision/cats:v42", "created": true, "path": "/tmp"}\\n')
except socket.timeout:
    print("NOTHING", flush=True)
"""


def test_a_planted_runtime_directory_is_refused(shared: Callable[..., Shared]) -> None:
    from artifactfs.mount import registry

    s = shared()
    attacker, victim = s.users.make(), s.users.make()
    draft = s.path("drafts", "vision", "cats", "work")
    assert s.probe(victim, f"[('mk', lambda: os.makedirs({draft!r})), "
                           f"('w', lambda: open({draft!r} + '/new.txt', 'w').write('v'))]") \
        == {"mk": "ok", "w": "ok"}
    planted = f"/tmp/artifactfs-{victim.pw_uid}"
    mounts = f"{planted}/artifactfs/mounts"
    listener = subprocess.Popen(
        ["setpriv", f"--reuid={attacker.pw_uid}", f"--regid={attacker.pw_gid}", "--init-groups",
         "--", *s.users.python_argv, "-c", LISTENER, mounts, s.mount.mp,
         registry.mount_id(s.mount.mp)],
        env=s.users.env(attacker), stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        r = s.as_cli(victim, "commit", draft, "--metadata", '{"token": "s3cr3t"}')
        assert r.returncode == 1, r.stdout
        assert r.stderr.startswith(f"error: refusing the runtime directory {planted}: it "
                                   f"belongs to {attacker.pw_name}"), r.stderr
        r = s.as_cli(victim, "draft", "vision/cats", "--mount", s.mount.mp)
        assert r.returncode == 1 and "refusing the runtime directory" in r.stderr
        out, _ = listener.communicate(timeout=30)
        assert "NOTHING" in out  # the attacker's socket never heard from the victim
    finally:
        listener.kill()
        listener.wait()
        shutil.rmtree(planted, ignore_errors=True)
    # with a runtime directory of his own, the same commit goes to root's daemon
    private = os.path.join(s.top, "run-victim")
    os.mkdir(private, 0o700)
    os.chown(private, victim.pw_uid, victim.pw_gid)
    r = s.as_cli(victim, "commit", draft, env={"XDG_RUNTIME_DIR": private})
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "vision/cats:v1", r.stderr


# --- item 3: log files and forged log lines --------------------------------------------------

def test_the_daemon_log_is_private_escaped_and_removed(shared: Callable[..., Shared],
                                                       env: dict[str, str]) -> None:
    from artifactfs import model
    from artifactfs.mount import registry
    from artifactfs.repo import Repo

    s = shared()
    uri = "file:///nonexistent/data\nERROR artifactfs.mount: FORGED by the attacker"
    entry = model.ref_entry(model.RefInfo(uri=uri, checksum=False), 5)
    Repo(env["ARTIFACTFS_STORE"]).commit_entries("vision", "evil", "dataset", {"x.bin": entry})
    attacker = s.users.make()
    target = s.path("vision", "evil", "v0", "x.bin")
    got = s.probe(attacker, f"[('read', lambda: open({target!r}, 'rb').read())]")
    assert got["read"] in ("EIO", "EACCES")
    log = registry.paths(s.mount.mp)["log"]
    st = os.lstat(log)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    wait_for(lambda: "FORGED" in Path(log).read_text(), 5, "the log line")
    text = Path(log).read_text()
    assert "data\\nERROR artifactfs.mount: FORGED" in text
    assert not any(line.startswith("ERROR artifactfs.mount: FORGED") for line in text.splitlines())
    s.cli("unmount", s.mount.mp)
    assert not os.path.lexists(log) and not os.path.lexists(log + ".1")


# --- item 4: config mistakes fail closed ----------------------------------------------------

def test_config_mistakes_refuse_to_start(shared: Callable[..., Shared], mounter: Any,
                                         tmp_path: Path) -> None:
    s = shared('[projects.secret]\nreaders = ["nobody-group"]\n')
    user = s.users.make()
    assert s.probe(user, f"[('ls', lambda: os.listdir({s.path('secret')!r}))]") == \
        {"ls": "EACCES"}
    s.cli("unmount", s.mount.mp)
    for text, line, key in [('[projects.secret]\nreader = ["g"]\n', 2, "projects.secret.reader"),
                            ('projects = ["secret"]\n', 1, "projects"),
                            ('[projects]\nsecret = "g"\n', 2, "projects.secret"),
                            ('[projects.secret]\nreaders = "grp"\n', 2,
                             "projects.secret.readers")]:
        s.config.write_text(text)
        r = s.mount.run("--store", s.mount.store, "mount", s.mount.mp, "--allow-other",
                        "--cache-dir", s.mount.cache)
        assert r.returncode == 1 and r.stderr.startswith(
            f"error: config file {s.config}, line {line}: {key}: "), r.stderr
        assert len(r.stderr.splitlines()) == 1 and not mounted(s.mount.mp)
    # the CLI of a user: a missing --config, an unreadable or non-UTF-8 config of his
    r = s.as_cli(user, "--config", "/nonexistent/afs.toml", "versions", "vision/cats")
    assert r.returncode == 1 and r.stderr == \
        "error: config file /nonexistent/afs.toml does not exist\n"
    xdg = os.path.join(s.top, "xdg")
    os.makedirs(os.path.join(xdg, "artifactfs"))
    os.chmod(xdg, 0o755)
    os.chmod(os.path.join(xdg, "artifactfs"), 0o755)
    conf = os.path.join(xdg, "artifactfs", "config.toml")
    Path(conf).write_text('store = "/x"\n')
    os.chmod(conf, 0o600)  # root's: the user can not read it
    r = s.as_cli(user, "versions", "vision/cats", env={"XDG_CONFIG_HOME": xdg})
    assert r.returncode == 1 and r.stderr == \
        f"error: config file {conf} can not be read: Permission denied\n", r.stderr
    Path(conf).write_bytes(b'store = "/x"\n# caf\xe9\n')
    os.chmod(conf, 0o644)
    r = s.as_cli(user, "versions", "vision/cats", env={"XDG_CONFIG_HOME": xdg})
    assert r.returncode == 1 and r.stderr == f"error: config file {conf}, line 2: not UTF-8 text\n"


# --- item 6: distributed drafts of two users ---------------------------------------------------

def test_two_users_are_two_writers_of_a_distributed_draft(shared: Callable[..., Shared]
                                                          ) -> None:
    s = shared()
    alice, bob = s.users.make(), s.users.make()
    g1 = s.path("drafts", "vision", "cats", "g1")

    def upsert(user: Any, files: dict[str, str]) -> None:
        writes = ", ".join(f"('{n}', lambda: open({g1!r} + '/{n}', 'w').write({c!r}))"
                           for n, c in files.items())
        assert set(s.probe(user, f"[('mk', lambda: os.mkdir({g1!r})), {writes}]").values()) \
            == {"ok"}
        r = s.as_cli(user, "upsert", g1)
        assert r.returncode == 0, r.stderr
        assert f"-u{user.pw_uid}" in r.stdout  # this user of this mount is the writer

    upsert(alice, {"a.txt": "alice\n", "clash.txt": "alice's\n"})
    upsert(bob, {"b.txt": "bob\n", "clash.txt": "bob's\n"})  # bob's part does not replace hers
    assert s.probe(alice, f"[('mk', lambda: os.mkdir({g1!r}))]") == {"mk": "ok"}
    r = s.as_cli(alice, "commit", g1)
    assert r.returncode == 1 and "clash.txt (from " in r.stderr, r.stderr
    assert f"-u{alice.pw_uid} and " in r.stderr and f"-u{bob.pw_uid})" in r.stderr
    assert "a.txt" not in r.stderr
    assert s.as_cli(alice, "draft", "discard", g1).returncode == 0
    upsert(bob, {"clash.txt": "alice's\n"})  # bob agrees
    assert s.probe(alice, f"[('mk', lambda: os.mkdir({g1!r}))]") == {"mk": "ok"}
    r = s.as_cli(alice, "commit", g1)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "vision/cats:v1", r.stderr
    v1 = s.path("vision", "cats", "v1")
    assert {n: Path(v1, n).read_text() for n in ("a.txt", "b.txt", "clash.txt")} == \
        {"a.txt": "alice\n", "b.txt": "bob\n", "clash.txt": "alice's\n"}


# --- item 7: rights are checked on every call ------------------------------------------------

HOLDER = """
import errno, os, sys
fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in sys.argv[1:]]
print("ready", flush=True)
sys.stdin.readline()
try:
    os.write(fds[0], b"more")
    os.fsync(fds[0])
    print("ok", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
sys.stdin.readline()
"""


def hold(s: Shared, user: Any, *paths: str) -> subprocess.Popen[str]:
    """A process of ``user`` holding ``paths`` open for writing until told to go on."""
    p = subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                          "--init-groups", "--", *s.users.python_argv, "-c", HOLDER, *paths],
                         env=s.users.env(user), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_rights_are_rechecked_on_every_draft_call(shared: Callable[..., Shared], users: Any,
                                                   env: dict[str, str]) -> None:
    readers, writers = users.group(), users.group()
    writer = users.make(groups=[readers, writers])
    colleague = users.make(groups=[readers, writers])
    outsider = users.make()
    s = shared(f'[projects.secret]\nreaders = ["{readers}"]\nwriters = ["{writers}"]\n')
    drafts = s.path("drafts", "secret")
    mine = s.path("drafts", "secret", "cats", "w1")
    assert s.probe(writer, f"[('mk', lambda: os.mkdir({mine!r})), "
                           f"('w', lambda: open({mine!r} + '/mine.txt', 'w').write('w'))]") \
        == {"mk": "ok", "w": "ok"}
    # drafts/secret/ answers the outsider exactly like MOUNT/secret/
    got = s.probe(outsider, f"""[
        ('stat_known', lambda: os.stat({drafts!r} + '/cats')),
        ('stat_unknown', lambda: os.stat({drafts!r} + '/nope')),
        ('ls', lambda: os.listdir({drafts!r})),
        ('ls_name', lambda: os.listdir({drafts!r} + '/cats')),
        ('stat_draft', lambda: os.stat({mine!r})),
        ('mkdir_draft', lambda: os.mkdir({drafts!r} + '/cats/o1')),
        ('mkdir_name', lambda: os.mkdir({drafts!r} + '/newart')),
        ('mount_ls', lambda: os.listdir({s.path('secret')!r})),
        ('mount_stat', lambda: os.stat({s.path('secret', 'cats')!r}))]""")
    assert got == dict.fromkeys(got, "EACCES") and len(got) == 9, got
    # a colleague sees his own drafts only; root sees all
    assert s.probe(colleague, f"[('ls', lambda: os.listdir({drafts!r} + '/cats'))]") == \
        {"ls": []}
    assert os.listdir(os.path.join(drafts, "cats")) == ["w1"]
    # --run and --input name projects: their ACLs apply, and say nothing of what exists
    od = s.path("drafts", "vision", "cats", "o1")
    assert s.probe(outsider, f"[('mk', lambda: os.mkdir({od!r})), "
                             f"('w', lambda: open({od!r} + '/o.txt', 'w').write('o'))]") \
        == {"mk": "ok", "w": "ok"}
    r = s.as_cli(outsider, "commit", od, "--run", "secret/x")
    assert r.returncode == 1 and r.stderr == \
        "error: --run secret/x: you may not record runs in project secret\n", r.stderr
    for ref in ("secret/cats:v0", "secret/cats:v99", "secret/nothing:v0"):
        r = s.as_cli(outsider, "commit", od, "--run", "vision/r1", "--input", ref)
        assert r.returncode == 1 and r.stderr == \
            f"error: --input {ref}: you may not read project secret\n", r.stderr
    store = Path(env["ARTIFACTFS_STORE"])
    assert not (store / "runs" / "secret").exists()
    assert not list(store.glob("artifacts/secret/cats/used_by*"))
    # the writer leaves the writers: within the rights TTL his draft is no longer his
    holder = hold(s, writer, os.path.join(mine, "mine.txt"))
    try:
        users.remove_from(writer, writers)
        time.sleep(1.5)
        got = s.probe(writer, f"""[
            ('read', lambda: open({mine!r} + '/mine.txt').read()),
            ('ls', lambda: os.listdir({mine!r})),
            ('create', lambda: open({mine!r} + '/new.txt', 'w')),
            ('mkdir', lambda: os.mkdir({drafts!r} + '/cats/w2'))]""")
        assert got == dict.fromkeys(got, "EACCES") and len(got) == 4, got
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "EACCES"  # through the fd he kept open
    finally:
        holder.kill()
        holder.wait()
    r = s.as_cli(writer, "commit", mine)
    assert r.returncode == 1 and "you may not write project secret (any more): draft " \
        "secret/cats/w1 stays for an administrator to discard" in r.stderr, r.stderr
    r = s.as_cli(writer, "draft", "discard", mine)
    assert r.returncode == 1 and "stays for an administrator" in r.stderr
    r = s.as_cli(writer, "draft", "list", "--mount", s.mount.mp)
    assert r.returncode == 0 and "w1" not in r.stdout
    assert Path(mine, "mine.txt").read_text() == "w"  # root still reads it, and discards it
    s.cli("draft", "discard", mine)
    # the config is re-read: vision becomes restricted, and a broken edit changes nothing
    s.config.write_text(f'[projects.secret]\nreaders = ["{readers}"]\nwriters = ["{writers}"]\n'
                        f'[projects.vision]\nreaders = ["{readers}"]\n')
    probe = f"[('ls', lambda: os.listdir({s.path('vision')!r})), " \
            f"('draft', lambda: os.listdir({od!r}))]"
    wait_for(lambda: s.probe(outsider, probe) == {"ls": "EACCES", "draft": "EACCES"}, 10,
             "the new rules")
    s.config.write_text('[projects.vision]\nreader = ["x"]\n')
    time.sleep(1.5)
    assert s.probe(outsider, probe) == {"ls": "EACCES", "draft": "EACCES"}
    from artifactfs.mount import registry
    assert "the config changed but is invalid" in Path(registry.paths(s.mount.mp)["log"]).read_text()


# --- item 8: the control socket ----------------------------------------------------------------

FLOOD = """
import json, socket, sys, time
conns = []
for _ in range(300):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sys.argv[1])
    conns.append(c)
time.sleep(0.5)
held = refused = 0
for c in conns:
    c.setblocking(False)
    try:
        refused += b"too many control connections" in c.recv(4096)
    except BlockingIOError:
        held += 1
print(json.dumps([held, refused]), flush=True)
sys.stdin.readline()
"""

REQUEST = """
import json, sys
from artifactfs.mount.control import request
from artifactfs.errors import ArtifactfsError
try:
    print(json.dumps(request(sys.argv[1], json.loads(sys.argv[2]))))
except ArtifactfsError as e:
    print(json.dumps({"error": str(e)}))
"""


def test_one_user_can_not_exhaust_the_control_socket(shared: Callable[..., Shared]) -> None:
    from artifactfs.mount import registry

    s = shared()
    hog, other = s.users.make(), s.users.make()
    sock = registry.paths(s.mount.mp)["control"]

    def send(user: Any, doc: dict[str, Any]) -> dict[str, Any]:
        r = s.users.run(user, [*s.users.python_argv, "-c", REQUEST, sock, json.dumps(doc)])
        assert r.returncode == 0, r.stderr
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    flood = subprocess.Popen(["setpriv", f"--reuid={hog.pw_uid}", f"--regid={hog.pw_gid}",
                              "--init-groups", "--", *s.users.python_argv, "-c", FLOOD, sock],
                             env=s.users.env(hog), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdin is not None
        assert json.loads(flood.stdout.readline()) == [16, 284]
        r = s.as_cli(other, "draft", "list", "--mount", s.mount.mp)  # others are served
        assert r.returncode == 0, r.stderr
        assert "too many control connections from uid" in send(hog, {"op": "stats"})["error"]
        flood.stdin.write("\n")
        flood.stdin.flush()
        flood.wait(timeout=30)
    finally:
        flood.kill()
        flood.wait()
    for op in ("cleanup", "refresh"):
        assert send(hog, {"op": op, "size": 0, "artifact": "vision/cats"})["error"] == \
            f"only root or the daemon's user may send {op!r} requests"
    stats = send(hog, {"op": "stats"})
    assert "cache" in stats and "last_error" not in stats["namespace"]
    assert send(hog, {"op": "commit", "project": "vision", "name": "cats", "id": "nope",
                      "wait": 1e9})["error"] == "invalid wait 1000000000.0: between 0 and 600 seconds"
    # the hog's commits wait for files he keeps open: they hold only his own slots
    paths = []
    for i in range(3):
        d = s.path("drafts", "vision", "cats", f"h{i}")
        assert s.probe(hog, f"[('mk', lambda: os.mkdir({d!r})), "
                            f"('w', lambda: open({d!r} + '/f', 'w').write('h'))]") \
            == {"mk": "ok", "w": "ok"}
        paths.append(d)
    holder = hold(s, hog, *(os.path.join(d, "f") for d in paths))
    waiting = [subprocess.Popen(
        ["setpriv", f"--reuid={hog.pw_uid}", f"--regid={hog.pw_gid}", "--init-groups", "--",
         *s.users.python_argv, "-m", "artifactfs", "commit", d, "--wait", "600"],
        env=s.users.env(hog), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for d in paths]
    try:
        time.sleep(1)
        mine = s.path("drafts", "vision", "cats", "o1")
        assert s.probe(other, f"[('mk', lambda: os.mkdir({mine!r})), "
                              f"('w', lambda: open({mine!r} + '/o', 'w').write('o'))]") \
            == {"mk": "ok", "w": "ok"}
        started = time.monotonic()
        r = s.as_cli(other, "commit", mine)
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "vision/cats:v1", r.stderr
        r = s.as_cli(other, "draft", "list", "--mount", s.mount.mp)
        assert r.returncode == 0
        assert time.monotonic() - started < 15
        assert all(p.poll() is None for p in waiting)  # still waiting for the hog's files
    finally:
        holder.kill()
        holder.wait()
        for p in waiting:
            try:
                p.communicate(timeout=30)
            finally:
                p.kill()
    assert [p.returncode for p in waiting] == [0, 0, 0]
