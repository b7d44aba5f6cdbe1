"""Config files fail closed (SPEC §9): every mistake is an error naming file, key and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactfs import config
from artifactfs.config import ProjectAccess, References
from artifactfs.errors import ConfigError

BAD = [
    ('[projects.vision]\nreaders = ["ml"]\nreader = ["ml"]\n', 3,
     "projects.vision.reader: unknown key"),
    ('projects = ["vision"]\n', 1, "projects: must be a table"),
    ('[projects]\nsecret = "g"\n', 2, "projects.secret: must be a table"),
    ('[projects.vision]\nreaders = "grp"\n', 2,
     "projects.vision.readers: must be a list of non-empty strings"),
    ('[projects.vision]\nwriters = []\n', 2, "projects.vision.writers: an empty list"),
    ('[projects.vision]\nreaders = ["ml", 3]\n', 2, "projects.vision.readers: must be a list"),
    ('stor = "/x"\n', 1, "stor: unknown key"),
    ('# c\nprojects = { vision = { readers = ["a"], writer = ["b"] } }\n', 2,
     "projects.vision.writer: unknown key"),
    ('projects.vision.readerz = ["a"]\n', 1, "projects.vision.readerz: unknown key"),
    ('[projects."no pe"]\nreaders = ["a"]\n', 1, "projects.no pe: invalid project name"),
    ('refresh = "10"\n', 1, "refresh: must be a number"),
    ('refresh = true\n', 1, "refresh: must be a number"),
    ('cache_size = "10 parsecs"\n', 1, "cache_size: invalid size"),
    ('store = 3\n', 1, "store: must be a non-empty string"),
    ('[references]\nfile_roots = "/data"\n', 2, "references.file_roots: must be a list"),
    ('[references]\nroots = ["/data"]\n', 2, "references.roots: unknown key"),
]


@pytest.mark.parametrize(("text", "line", "what"), BAD)
def test_mistakes_are_errors_naming_file_key_and_line(tmp_path: Path, text: str, line: int,
                                                      what: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        config.load(str(path))
    assert str(ei.value).startswith(f"config file {path}, line {line}: {what}"), ei.value


def test_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('store = "/srv/store"\nrefresh = 2\ncache_size = "1GiB"\n'
                    '[projects.vision]\nreaders = ["ml"]\nwriters = ["ml-admin"]\n'
                    '[projects.open]\n'
                    '[references]\nfile_roots = ["/datasets"]\nbuckets = []\n'
                    'private_hosts = ["10.0.0.7"]\n')
    cfg = config.load(str(path))
    assert cfg.projects == {"vision": ProjectAccess(("ml",), ("ml-admin",)),
                            "open": ProjectAccess()}
    assert cfg.references == References(("/datasets",), (), ("10.0.0.7/32",))
    assert (cfg.refresh, cfg.cache_size, cfg.config_file) == (2.0, 2**30, str(path))


def test_unreadable_missing_and_undecodable_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"config file /nonexistent/x\.toml does not exist"):
        config.load("/nonexistent/x.toml")
    with pytest.raises(ConfigError, match="can not be read"):
        config.load(str(tmp_path))  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'store = "/x"\n# caf\xe9\n')
    with pytest.raises(ConfigError, match=f"config file {bad}, line 2: not UTF-8 text"):
        config.load(str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text('a = "x\n')
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 1"):
        config.load(str(broken))
    # a missing default file is fine; a default file that is present must be valid
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.load().projects == {}
    user_file = tmp_path / "xdg" / "artifactfs" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text('[projects.vision]\nreader = ["ml"]\n')
    with pytest.raises(ConfigError, match=r"projects\.vision\.reader"):
        config.load()


def test_watch_sees_edits(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[projects.vision]\nreaders = ["ml"]\n')
    w = config.Watch(str(path))
    assert w.changed() is None
    path.write_text('[projects.vision]\nreaders = ["ml"]\nwriters = ["ml-admin"]\n')
    os.utime(path, ns=(1, 1))
    new = w.changed()
    assert new is not None and new.projects["vision"].writers == ("ml-admin",)
    assert w.changed() is None
    path.write_text('[projects.vision]\nwriter = ["x"]\n')
    with pytest.raises(ConfigError):
        w.changed()
