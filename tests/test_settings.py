"""Settings resolution: env, .env, saved blocks, defaults; bad settings name themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from blocks.errors import ConfigError
from blocks.settings import filesystem, load_settings, paper_index
from blocks.sqlite_index import SQLitePaperIndex


def test_embedded_defaults(home):
    s = load_settings()
    assert s.index == "sqlite" and s.storage == "local" and s.opensearch_index == "research-papers-v2"
    idx = paper_index(s)
    assert isinstance(idx, SQLitePaperIndex) and Path(idx.path) == home / "index.sqlite3"
    fs = filesystem("code", s)
    assert isinstance(fs, LocalFileSystem) and Path(fs.basepath) == home / "storage" / "code"


def test_env_and_dotenv(home, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("ANNAPURNA_RAW_BUCKET=from-dotenv\nANNAPURNA_CODE_BUCKET=also-dotenv\nOTHER_TOOL=x\n")
    monkeypatch.setenv("ANNAPURNA_CODE_BUCKET", "from-env")
    s = load_settings()
    assert s.raw_bucket == "from-dotenv" and s.code_bucket == "from-env"  # env beats .env


@pytest.mark.parametrize(
    "env,dotenv,message",
    [
        ({"ANNAPURNA_INDXE": "sqlite"}, "", "unknown setting ANNAPURNA_INDXE"),
        ({}, "ANNAPURNA_STORGE=s3\n", "unknown setting ANNAPURNA_STORGE"),
        ({"ANNAPURNA_INDEX": "mysql"}, "", "setting ANNAPURNA_INDEX is invalid"),
        ({"ANNAPURNA_STORAGE": "ftp"}, "", "setting ANNAPURNA_STORAGE is invalid"),
        ({"ANNAPURNA_INDEX": "opensearch"}, "", "needs ANNAPURNA_OPENSEARCH_URL"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_setting(home, tmp_path, monkeypatch, env, dotenv, message):
    (tmp_path / ".env").write_text(dotenv)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_unwritable_home_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ANNAPURNA_HOME", str(blocker / "home"))
    with pytest.raises(ConfigError, match=r"ANNAPURNA_HOME=.*a-file/home is not a writable directory"):
        load_settings()


def test_saved_blocks_are_resolved_by_name(home, prefect_server, monkeypatch, tmp_path):
    SQLitePaperIndex(path=str(tmp_path / "team.sqlite3")).save("team-index", overwrite=True)
    LocalFileSystem(basepath=str(tmp_path / "team-raw")).save("team-raw", overwrite=True)
    monkeypatch.setenv("ANNAPURNA_INDEX_BLOCK", "sqlite-paper-index/team-index")
    monkeypatch.setenv("ANNAPURNA_RAW_STORAGE_BLOCK", "local-file-system/team-raw")
    s = load_settings()
    assert paper_index(s).path == str(tmp_path / "team.sqlite3")
    assert filesystem("raw", s).basepath == str(tmp_path / "team-raw")
    assert Path(filesystem("code", s).basepath) == home / "storage" / "code"  # unset: default

    monkeypatch.setenv("ANNAPURNA_INDEX_BLOCK", "sqlite-paper-index/missing")
    with pytest.raises(ConfigError, match="ANNAPURNA_INDEX_BLOCK='sqlite-paper-index/missing': cannot load"):
        paper_index(load_settings())
    monkeypatch.setenv("ANNAPURNA_INDEX_BLOCK", "local-file-system/team-raw")
    with pytest.raises(ConfigError, match="is a LocalFileSystem, not a PaperIndex"):
        paper_index(load_settings())


def test_prefect_block_register_finds_our_blocks(prefect_server):
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "block", "register", "-m", "blocks"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully registered 2 blocks" in out.stdout, out.stdout
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "block", "type", "ls"],
        capture_output=True, text=True, env={**env, "COLUMNS": "250"}, timeout=120,
    ).stdout
    assert "sqlite-paper-index" in listed and "opensearch-paper-index" in listed
