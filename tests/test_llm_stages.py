"""Triage, the judge and code generation with the replay model: relevant and irrelevant
papers, an unparseable answer, throttling then success, a program failing the static
checks, a run-time failure repaired on the next attempt (run for real on CPU), and a
second run of the whole stage that makes zero model calls."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

import flows.process_papers as pp
from blocks.paper import Paper, PaperStatus
from blocks.settings import filesystem, load_settings, paper_index
from tasks import llm
from tasks.codegen import parse_program, static_check
from tasks.storage import read_object
from tasks.triage import prefilter

GOOD_PROGRAM = textwrap.dedent('''
    import json, torch
    def pick_device():
        try:
            import torch_xla.core.xla_model as xm
            return xm.xla_device(), xm
        except ImportError:
            return torch.device("cpu"), None
    device, xm = pick_device()
    torch.manual_seed(0)
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    x = torch.randn(64, 4); y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    for step in range(50):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        if xm is not None:
            xm.mark_step()
    print("METRICS:", json.dumps({"training_loss": float(loss.detach()), "val_mse": float(loss.detach())}))
''')
FAILING_PROGRAM = GOOD_PROGRAM.replace("y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])", "y = x @ torch.tensor([1.0, -2.0, 0.5])")
BAD_CHECKS = "import requests, torch\nmodel = torch.nn.Linear(2, 2).cuda()\nprint('done')\n"


def converse(text: str, tin: int = 1000, tout: int = 200) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout}, "metrics": {"latencyMs": 900}}


def verdict(relevant=True, implementable=True) -> str:
    return "```json\n" + json.dumps({"relevant": relevant, "relevance": 0.8 if relevant else 0.1, "novelty": 0.4,
                                     "topics": ["training"], "reason": "Because.", "implementable": implementable}) + "\n```"


def program(code: str) -> str:
    return f"PLAN:\nmodel: linear\ndata: synthetic: Gaussian\ntraining: SGD\nmetrics: training_loss, val_mse\n\n```python\n{code}```\n"


PAPERS = {  # id -> (title, abstract)
    "arxiv:2611.10001": ("Adapters for efficient transformer training", "Low-rank adapters make transformer fine-tuning cheap."),
    "arxiv:2611.10002": ("Attention sinks in long-context transformers", "We study attention and training of transformers."),
    "arxiv:2611.10003": ("Optimizer warmup for transformer pretraining", "A warmup schedule for the optimizer in training."),
    "arxiv:2611.10004": ("Normalization layers and training stability", "RMS normalization stabilises transformer training."),
    "arxiv:2611.10005": ("Adapter merging for multi-task transformers", "Merging LoRA adapters trained on transformer tasks."),
    "arxiv:2611.10006": ("Gradient noise in optimizer training dynamics", "The optimizer's noise shapes transformer training."),
    "arxiv:2611.10007": ("Bread recipes of medieval monasteries", "A catalogue of sourdough techniques in manuscripts."),
}


@pytest.fixture
def replay(tmp_path, home, monkeypatch, prefect_server):
    """A replay directory with this test's recorded answers, and the papers indexed."""
    root = tmp_path / "replay"
    files = {
        "judge/arxiv_2611.10001": converse(verdict()),
        "judge/arxiv_2611.10002": converse(verdict(relevant=False)),
        "judge/arxiv_2611.10003": [converse("I think this paper is quite relevant!"), converse("Still not JSON, sorry."),
                                   converse(verdict())],  # a third ask (retry-failed) answers properly
        "judge/arxiv_2611.10004": [{"error": {"Code": "ThrottlingException", "Message": "Too many requests", "HTTPStatusCode": 429}},
                                   converse(verdict())],
        "judge/arxiv_2611.10005": converse(verdict()),
        "judge/arxiv_2611.10006": converse(verdict()),
        "codegen/arxiv_2611.10001": converse(program(GOOD_PROGRAM), 2000, 900),
        "codegen/arxiv_2611.10004": converse(program(GOOD_PROGRAM), 2000, 900),
        "codegen/arxiv_2611.10003": converse(program(GOOD_PROGRAM), 2000, 900),
        "codegen/arxiv_2611.10005": [converse(program(BAD_CHECKS)), converse(program(BAD_CHECKS))],
        "codegen/arxiv_2611.10006": converse(program(FAILING_PROGRAM), 2000, 900),
        "codegen/arxiv_2611.10006.2": converse(program(GOOD_PROGRAM), 2600, 900),
    }
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.json").write_text(json.dumps(body))
    monkeypatch.setenv("ANNAPURNA_LLM_REPLAY_DIR", str(root))
    llm.reset_replay()
    index = paper_index()
    index.upsert([Paper(id=i, source="arxiv", venue="arXiv", title=t, abstract=a) for i, (t, a) in PAPERS.items()])
    fast = pp.judge_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
    monkeypatch.setattr(pp, "judge_task", fast)
    return root


def served() -> int:
    return sum(llm._cursors.values())


def test_the_stages_with_the_replay_model(replay):
    report = asyncio.run(pp.process_papers(paper_ids=list(PAPERS))).stages
    index = paper_index()
    p = {i: index.get(i) for i in PAPERS}
    assert p["arxiv:2611.10007"].status is PaperStatus.REJECTED  # the pre-filter: no model call
    assert p["arxiv:2611.10007"].history[-1].reason.startswith("pre-filter: relevance")
    assert report.prefiltered_out == 1
    assert p["arxiv:2611.10002"].status is PaperStatus.REJECTED and p["arxiv:2611.10002"].verdict.relevant is False
    assert p["arxiv:2611.10003"].status is PaperStatus.SCRAPED  # unparseable twice: a clear failure, kept for later
    assert p["arxiv:2611.10003"].error.startswith("judge output unparseable:")
    assert p["arxiv:2611.10004"].status is PaperStatus.GENERATED  # throttled, retried by Prefect, then judged
    assert p["arxiv:2611.10001"].verdict.model == "replay:judge/arxiv_2611.10001.json"
    assert p["arxiv:2611.10005"].status is PaperStatus.GENERATION_FAILED
    assert "imports 'requests'" in p["arxiv:2611.10005"].error and "hard-coded .cuda()" in p["arxiv:2611.10005"].error
    gen = p["arxiv:2611.10001"].code_versions[0]
    code_fs = filesystem("code")
    assert read_object(code_fs, gen.code_key).decode() == GOOD_PROGRAM.strip() + "\n"
    assert b"data: synthetic: Gaussian" in read_object(code_fs, gen.code_key.replace("program.py", "plan.md"))
    meta = json.loads(read_object(code_fs, gen.code_key.replace("program.py", "generation.json")))
    assert meta["usage"]["input_tokens"] == 2000 and meta["model"] == "replay:codegen/arxiv_2611.10001.json"
    # judge: 1 + 1 + 2 (unparseable, asked once more) + 1 (after a throttled try) + 1 + 1; codegen: 1 + 1 + 2 + 1
    assert report.usage.calls == 7 + 5 and served() == 13  # the throttled try was refused: no tokens
    s = load_settings()
    assert report.usage.dollars == pytest.approx(
        (report.usage.input_tokens * s.llm_price_in_per_m + report.usage.output_tokens * s.llm_price_out_per_m) / 1e6)


def test_a_second_run_of_the_whole_stage_makes_zero_model_calls(replay, tmp_path, monkeypatch):
    asyncio.run(pp.process_papers(paper_ids=list(PAPERS)))
    calls = served()
    # the same papers, scraped again into a fresh index (a crash and a re-run), same storage
    monkeypatch.setenv("ANNAPURNA_SQLITE_PATH", str(tmp_path / "fresh.sqlite3"))
    paper_index().upsert([Paper(id=i, source="arxiv", venue="arXiv", title=t, abstract=a) for i, (t, a) in PAPERS.items()])
    again = asyncio.run(pp.process_papers(paper_ids=list(PAPERS))).stages
    assert served() == calls and again.usage.calls == 0 and again.usage.dollars == 0
    assert again.cached_calls == 6 + 4  # every judge and codegen answer from the cache
    assert paper_index().get("arxiv:2611.10001").status is PaperStatus.GENERATED


def test_a_runtime_failure_is_repaired_on_the_next_attempt(replay):
    from flows.execute_batch import execute_batch

    pid = "arxiv:2611.10006"
    asyncio.run(pp.process_papers(paper_ids=[pid]))
    first = asyncio.run(execute_batch([pid], timeout_s=120))[0]
    assert not first.success and "RuntimeError" in first.stderr
    assert paper_index().get(pid).status is PaperStatus.EXECUTION_FAILED

    report = pp.repair_papers([pid])
    paper = paper_index().get(pid)
    assert report.generated == 1 and paper.status is PaperStatus.GENERATED and len(paper.code_versions) == 2
    second = asyncio.run(execute_batch([pid], timeout_s=120))[0]
    assert second.success and second.code_version == 2 and second.metrics["training_loss"] < 1e-3
    paper = paper_index().get(pid)
    assert paper.status is PaperStatus.EXECUTED
    assert [v.success for v in paper.code_versions] == [False, True]  # every attempt kept with its result


def test_parsing_and_static_checks():
    p = parse_program(program(GOOD_PROGRAM))
    assert p.dataset == "synthetic: Gaussian" and static_check(p.code) == []
    assert static_check("def f(:\n")[0].startswith("line 1: does not parse")
    assert static_check("import torch\nprint('no metrics')\n") == [
        "no training loop (a loop calling loss.backward() and optimizer.step())", "never prints a `METRICS: {json}` line"]
    assert "line 1: imports 'socket': programs have no network; never download" in static_check(
        "import socket\nprint('METRICS: {}')\n")
    with pytest.raises(llm.LLMError, match="no ```python block"):
        parse_program("Here is my plan but I forgot the code.")


def test_prefilter_rejects_off_topic_and_near_duplicates():
    s = load_settings()
    papers = [Paper(id=i, source="arxiv", venue="arXiv", title=t, abstract=a) for i, (t, a) in PAPERS.items()]
    copy = Paper(id="arxiv:2611.19999", source="arxiv", venue="arXiv", title=PAPERS["arxiv:2611.10001"][0],
                 abstract=PAPERS["arxiv:2611.10001"][1])
    decisions = {d.paper_id: d for d in prefilter(papers + [copy], [], s.interests, s.interest_keywords.split(","),
                                                   s.prefilter_threshold, s.duplicate_threshold)}
    assert not decisions["arxiv:2611.10007"].keep and decisions["arxiv:2611.10001"].keep
    assert decisions["arxiv:2611.19999"].duplicate_of == "arxiv:2611.10001"


def test_throttling_is_classified_as_retryable():
    from botocore.exceptions import ClientError

    throttled = ClientError({"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 429}}, "Converse")
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Converse")
    server = ClientError({"Error": {"Code": "Whatever"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Converse")
    assert llm.is_retryable(throttled) and llm.is_retryable(server) and not llm.is_retryable(denied)


def test_retry_failed_asks_the_judge_again_instead_of_the_cache(replay):
    from flows.retry_failed import failed_papers, retry_failed

    asyncio.run(pp.process_papers(paper_ids=list(PAPERS)))
    assert [p.id for p in failed_papers("judge", None)["judge"]] == ["arxiv:2611.10003"]
    assert [p.id for p in failed_papers(None, None)["generate"]] == ["arxiv:2611.10005"]
    result = asyncio.run(retry_failed(stage="judge"))
    assert result.retried == {"judge": ["arxiv:2611.10003"]}
    assert result.final == {"arxiv:2611.10003": "generated"}
    assert paper_index().get("arxiv:2611.10003").error is None
