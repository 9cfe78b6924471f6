"""Every operator command against a real SQLite index filled by a real run of the chain
(replay model, programs run on CPU), through the installed `annapurna` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from blocks.paper import Paper
from blocks.settings import filesystem, load_settings, paper_index
from deployments.demo_corpus import DEMO_PAPERS, make_pdf
from tasks.persist import persist_scraped

CLI = str(Path(sys.executable).with_name("annapurna"))
NORM, LORA = "openreview:dEm0NoRm02", "openreview:dEm0LoRA01"


def annapurna(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_operator_commands_on_a_real_run(home, prefect_server, tmp_path):
    import flows.process_papers as pp
    from flows.execute_batch import execute_batch

    s = load_settings()
    index, raw = paper_index(s), filesystem("raw", s)
    ids = [persist_scraped(Paper(id=f"openreview:{d.forum}", source="openreview", venue="ICLR", year=2025,
                                 title=d.title, authors=d.authors, abstract=d.abstract), make_pdf(d), raw, index).id
           for d in DEMO_PAPERS]
    asyncio.run(pp.process_papers(paper_ids=ids))
    asyncio.run(execute_batch([i for i in ids if index.get(i).status == "generated"], timeout_s=120))
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "200"}

    board = json.loads(annapurna("status", "--json", env=env).stdout)
    assert board["papers"]["executed"] == 2 and board["papers"]["execution_failed"] == 1 and board["papers"]["rejected"] == 1
    assert [f["paper"] for f in board["failures"]] == [NORM] and board["last_day"]["calls"] == 6
    assert board["instance"].startswith("not configured")
    assert board["runs_last_day"] == {"trained": 2, "failed": 1}, board["runs_last_day"]
    human = annapurna("status", env=env).stdout
    assert "executed 2" in human and "recent failures" in human

    listed = json.loads(annapurna("papers", "list", "--status", "executed", "--json", env=env).stdout)
    assert sorted(r["id"] for r in listed) == sorted([LORA, "openreview:dEm0BrOkEn4"])
    assert [r["id"] for r in json.loads(annapurna("papers", "search", "normalisation", "--json", env=env).stdout)] == [NORM]
    shown = json.loads(annapurna("papers", "show", NORM, "--json", env=env).stdout)
    assert shown["verdict"]["relevant"] and shown["code_versions"][0]["result"]["error"] == "nonzero exit 1"
    assert "RuntimeError" in shown["code_versions"][0]["result"]["stderr"]
    assert "code v1" in annapurna("papers", "show", LORA, env=env).stdout

    files = json.loads(annapurna("papers", "download", LORA, str(tmp_path / "out"), "--json", env=env).stdout)
    names = sorted(Path(f).name for f in files)
    assert names == ["generation.json", "paper.pdf", "paper.txt", "plan.md", "program.py", "result.json",
                     "stderr.txt", "stdout.txt"]
    code_only = json.loads(annapurna("papers", "download", LORA, str(tmp_path / "code"), "--code", "--json", env=env).stdout)
    assert sorted(Path(f).name for f in code_only) == ["generation.json", "plan.md", "program.py"]

    would = json.loads(annapurna("retry-failed", "--dry-run", "--json", env=env).stdout)
    assert would == [{"stage": "execute", "paper": NORM, "status": "execution_failed", "reason": "nonzero exit 1"}]
    assert json.loads(annapurna("retry-failed", "--stage", "judge", "--dry-run", "--json", env=env).stdout) == []

    rep = json.loads(annapurna("report", "--since", "1d", "--json", "--out", str(tmp_path / "r.md"),
                               "--plot", str(tmp_path / "day.png"), env=env).stdout)
    png = (tmp_path / "day.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    assert rep["papers"] == 4 and rep["execution_success_rate"] == 2 / 3 and rep["usage"]["calls"] == 6
    assert rep["dollars_per_100_papers"] > 0 and "runs that ran to completion (of runs) | 67%" in (tmp_path / "r.md").read_text()
    assert rep["trained_rate"] is not None and "runs that trained: the loss fell" in (tmp_path / "r.md").read_text()
    assert set(rep["by_venue"]) == {"ICLR 2025"} and rep["by_venue"]["ICLR 2025"]["runs"] == 3


def test_bad_input_is_one_line_and_changes_nothing(home, tmp_path):
    env = dict(os.environ)
    out = annapurna("papers", "show", "arxiv:0000.00000", env=env)
    assert out.returncode == 2 and out.stderr.strip() == "error: no paper with id 'arxiv:0000.00000' in the index"
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"not a database" * 100)
    out = annapurna("papers", "list", env={**env, "ANNAPURNA_SQLITE_PATH": str(corrupt)})
    assert out.returncode == 2 and "ANNAPURNA_SQLITE_PATH" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert corrupt.read_bytes() == b"not a database" * 100
    out = annapurna("papers", "list", "--status", "finished", env=env)
    assert out.returncode != 0 and "unknown status 'finished'" in out.stderr


def test_scrape_rejects_what_nothing_serves_before_any_network_call_or_flow_run(home, tmp_path):
    """No PREFECT_API_URL and an unreachable arXiv/OpenReview: had any of these started a
    flow, a temporary Prefect server would have started and a request would have gone out."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"ANNAPURNA_HOME": str(home), "ANNAPURNA_ARXIV_URL": "http://127.0.0.1:9/none",
                "ANNAPURNA_OPENREVIEW_URL": "http://127.0.0.1:9/none", "PREFECT_HOME": str(tmp_path / "ph")})
    cases = {
        ("scrape", "foo", "--year", "2024"): "error: unknown venue 'foo'; known: ICLR, ICML, NeurIPS, MLSys, or arxiv",
        ("scrape", "foo"): "error: unknown venue 'foo'",
        ("scrape", "ICLR", "--year", "1999"): "error: ICLR 1999: no such year; ICLR is listed from 2013 to",
        ("scrape", "NeurIPS", "--year", "2024", "--source", "pmlr"): "error: NeurIPS 2024 is not served by 'pmlr'",
        ("scrape", "arxiv", "--category", "cs.XX"): "error: unknown arXiv category 'cs.XX'",
    }
    for args, expected in cases.items():
        out = annapurna(*args, env=env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.startswith(expected) and out.stderr.count("\n") == 1, (args, out.stderr)
        assert "Traceback" not in out.stderr and "Starting temporary server" not in out.stdout + out.stderr
    assert not (tmp_path / "ph").exists() or not any((tmp_path / "ph").rglob("*.db"))
