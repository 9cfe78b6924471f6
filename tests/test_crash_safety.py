"""Kill the process running a pipeline (SIGKILL) part-way, run it again: it finishes the
remaining work; no paper is lost or duplicated, and no model call already answered is
paid for twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from conftest import REPO

from blocks.paper import PaperStatus
from blocks.settings import paper_index
from deployments.demo_corpus import demo_server
from deployments.replay import BackgroundReplay

RUN = ("import asyncio; from flows.scrape_conference import scrape_conference; "
       "asyncio.run(scrape_conference(venue='ICLR', year=2025, until='generate', batch_size=1))")


def test_sigkill_mid_run_then_rerun(home, prefect_server, tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    with BackgroundReplay(demo_server(latency_s=0.05)) as url:
        env = {
            "ANNAPURNA_OPENREVIEW_URL": f"{url}/or2", "ANNAPURNA_OPENREVIEW_V1_URL": f"{url}/or1",
            "ANNAPURNA_OPENREVIEW_WEB_URL": url, "ANNAPURNA_OPENREVIEW_USERNAME": "annapurna@example.org",
            "ANNAPURNA_OPENREVIEW_PASSWORD": "demo-password", "ANNAPURNA_LLM_REPLAY_LOG": str(log),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        proc = subprocess.Popen([sys.executable, "-c", RUN], cwd=REPO, env={**os.environ, "PREFECT_API_URL": prefect_server},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        index = paper_index()
        judged_at_kill: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                papers = index.list_papers()
            except Exception:
                papers = []
            judged_at_kill = {p.id for p in papers if p.verdict is not None}
            if judged_at_kill:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(30)
        assert judged_at_kill, "the run ended before any paper was judged; nothing was interrupted"
        calls_before = Counter(log.read_text().split())

        from flows.scrape_conference import scrape_conference

        outcome = asyncio.run(scrape_conference(venue="ICLR", year=2025, until="generate", batch_size=1))

    papers = {p.id: p for p in paper_index().list_papers()}
    assert len(papers) == 4  # none lost, none duplicated
    assert {i: p.status for i, p in papers.items()} == {
        "openreview:dEm0LoRA01": PaperStatus.GENERATED, "openreview:dEm0NoRm02": PaperStatus.GENERATED,
        "openreview:dEm0BrOkEn4": PaperStatus.GENERATED, "openreview:dEm0ReCiPe3": PaperStatus.REJECTED,
    }
    assert all(len(p.code_versions) <= 1 for p in papers.values())
    calls = Counter(log.read_text().split())
    for pid in judged_at_kill:  # answered before the kill: never asked again
        key = "judge/" + pid.replace(":", "_")
        assert calls[key] == calls_before[key] == 1, (key, calls_before, calls)
    assert outcome.chain.final == {i: p.status.value for i, p in papers.items()}
