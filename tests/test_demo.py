"""What `make demo` does, headless: a real Prefect server, real workers for `default` and
`trainium`, the demo corpus served on localhost, scrape-conference/iclr through to
execution with the replay model. Every paper's final state and the run's artifacts."""

from __future__ import annotations

import json

from rich.console import Console

from blocks.paper import PaperStatus
from blocks.sqlite_index import SQLitePaperIndex
from conftest import REPO
from deployments.demo import run_demo
from tasks.storage import read_object


def test_the_demo_end_to_end(tmp_path):
    base = tmp_path / ".demo"
    outcome = run_demo(base, keep_running=False, console=Console(width=120))
    assert outcome["state"] == "Completed"
    assert outcome["papers"] == {
        "openreview:dEm0LoRA01": "executed",
        "openreview:dEm0NoRm02": "executed",   # failed at v1, repaired from its error tail
        "openreview:dEm0ReCiPe3": "rejected",  # by the local pre-filter: no model call
        "openreview:dEm0BrOkEn4": "executed",  # damaged PDF recorded; judged from its abstract
    }
    keys = dict(outcome["artifacts"])
    assert keys["paper-outcomes"] == "table" and keys["execute-batch"] == "table"
    assert keys["llm-cost"] == "markdown" and keys["scrape-report"] == "markdown"
    assert keys["execution-progress"] == "progress"

    index = SQLitePaperIndex(path=str(base / "home" / "index.sqlite3"))
    norm = index.get("openreview:dEm0NoRm02")
    assert [v.success for v in norm.code_versions] == [False, True]
    assert [h.status for h in norm.history] == ["scraped", "judged", "generated", "queued", "execution_failed",
                                                "generated", "queued", "executed"]
    broken = index.get("openreview:dEm0BrOkEn4")
    assert broken.pdf_key is None and broken.verdict.relevant and broken.status is PaperStatus.EXECUTED
    lora = index.get("openreview:dEm0LoRA01")
    from prefect.filesystems import LocalFileSystem

    result = json.loads(read_object(LocalFileSystem(basepath=str(base / "home" / "storage" / "results")),
                                    lora.code_versions[-1].result_key))
    assert result["success"] and result["isolation"] and len(result["metrics_series"]) == 11
    assert lora.verdict.model == "replay:judge/openreview_dEm0LoRA01.json"
    # the verdicts: LoRA trained and beat its baseline; the repaired one trained; the damaged-PDF one trained
    assert (lora.code_versions[-1].training, lora.code_versions[-1].beats_baseline) == ("trained", True)
    assert [v.training for v in norm.code_versions] == ["failed", "trained"]
    assert broken.code_versions[-1].training == "trained"
    preflight = [v.preflight for v in norm.code_versions]
    if (REPO / ".preflight-venv" / "bin" / "python").exists():  # `make test` builds it
        # v1 was stopped by the preflight (no trn1 time) and repaired; v2 passed it and trained
        assert preflight[0]["passed"] is False and preflight[1]["passed"] is True
        assert norm.code_versions[0].error.startswith("preflight: ")
    else:
        print("no .preflight-venv: the demo ran without preflight")
        assert all("skipped" in p for p in preflight)
