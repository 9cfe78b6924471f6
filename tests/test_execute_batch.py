"""execute-batch on a real Prefect server: programs from storage, results to storage and
the index; CloudWatch against a local moto server; and the `trainium` pool end to end with
`prefect worker start --pool trainium --run-once`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from conftest import REPO
from test_trainium_worker import TRAIN

from blocks.paper import CodeArtifact, Paper, PaperStatus
from blocks.settings import filesystem, load_settings, paper_index
from tasks.storage import code_key, put_once, read_object

BIN = Path(sys.executable).parent
FAILING = "import sys\nprint('about to fail')\nraise RuntimeError('shape mismatch in layer 2')\n"


def seed(pid: str, code: str | None, status: str = "generated") -> None:
    s = load_settings()
    index, code_fs = paper_index(s), filesystem("code", s)
    paper = Paper(id=pid, source="arxiv", venue="arXiv", title=f"Paper {pid}")
    for step in ("judged", "generated", "queued")[: ("judged", "generated", "queued").index(status) + 1]:
        paper = paper.advance(step)
    if code is not None:
        key = code_key(pid, 1)
        digest = put_once(code_fs, key, code.encode())
        paper = paper.model_copy(update={"code_versions": [CodeArtifact(paper_id=pid, version=1, code_key=key, sha256=digest)]})
    index.upsert([paper])


def test_execute_batch_records_results_in_storage_and_index(home, prefect_server):
    from flows.execute_batch import execute_batch

    seed("arxiv:2611.00001", TRAIN)
    seed("arxiv:2611.00002", FAILING, status="queued")
    seed("arxiv:2611.00003", None)
    ids = ["arxiv:2611.00001", "arxiv:2611.00002", "arxiv:2611.00003", "arxiv:9999.99999"]
    results = asyncio.run(execute_batch(ids, timeout_s=120))
    by_id = {r.paper_id: r for r in results}
    assert set(by_id) == set(ids[:3])  # the unknown id is skipped with a warning

    index, results_fs = paper_index(), filesystem("results")
    ok, bad, nocode = (index.get(i) for i in ids[:3])
    assert ok.status is PaperStatus.EXECUTED and ok.code_versions[0].success
    assert ok.code_versions[0].metrics["step"] == 59
    stored = json.loads(read_object(results_fs, ok.code_versions[0].result_key))
    assert stored["success"] and len(stored["metrics_series"]) == 3 and stored["has_training_loop"]
    stdout_key = ok.code_versions[0].result_key.replace("result.json", "stdout.txt")
    assert b"METRICS:" in read_object(results_fs, stdout_key)

    assert bad.status is PaperStatus.EXECUTION_FAILED and bad.error == "nonzero exit 1"
    stderr_key = bad.code_versions[0].result_key.replace("result.json", "stderr.txt")
    assert b"RuntimeError: shape mismatch in layer 2" in read_object(results_fs, stderr_key)
    assert nocode.status is PaperStatus.EXECUTION_FAILED and nocode.error == "paper arxiv:2611.00003 has no generated code"
    assert [h.status for h in ok.history][-2:] == ["queued", "executed"]

    # running the same version again keeps both runs (write-once storage, one folder per run)
    index.transition("arxiv:2611.00002", "queued", "re-run")
    asyncio.run(execute_batch(["arxiv:2611.00002"], timeout_s=60))
    runs = list((load_settings().home_dir / "storage" / "results" / "arxiv" / "2611.00002" / "v1").iterdir())
    assert len(runs) == 2


def test_cloudwatch_metrics_reach_a_moto_server(home, prefect_server, moto_server, monkeypatch):
    from flows.execute_batch import execute_batch

    monkeypatch.setenv("ANNAPURNA_CLOUDWATCH", "true")
    monkeypatch.setenv("ANNAPURNA_CLOUDWATCH_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("ANNAPURNA_AWS_REGION", "us-east-1")
    seed("arxiv:2611.00010", TRAIN)
    asyncio.run(execute_batch(["arxiv:2611.00010"], timeout_s=120))
    cw = boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1")
    metrics = cw.list_metrics(Namespace="Trainium/Training")["Metrics"]
    names = {m["MetricName"] for m in metrics if {"Name": "PaperId", "Value": "arxiv:2611.00010"} in m["Dimensions"]}
    assert {"ExecutionTime", "Success", "PeakMemoryMB", "training_loss", "val_mse"} <= names
    assert all({"Name": "InstanceType", "Value": "trn1.2xlarge"} in m["Dimensions"] for m in metrics)


def test_execute_batch_trainium_on_a_real_worker(home, prefect_server):
    from prefect import get_client

    seed("arxiv:2611.00020", TRAIN)
    seed("arxiv:2611.00021", FAILING)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ANNAPURNA_HOME": str(home), "ANNAPURNA_CPU_SLOTS": "2"}
    run = lambda *a, timeout=180: subprocess.run(a, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)  # noqa: E731
    for cmd in ([sys.executable, "-m", "deployments.pools"],
                [str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "trainium"],
                [str(BIN / "prefect"), "deployment", "run", "execute-batch/trainium",
                 "--param", 'paper_ids=["arxiv:2611.00020", "arxiv:2611.00021"]'],
                [str(BIN / "prefect"), "worker", "start", "--pool", "trainium", "--run-once"]):
        out = run(*cmd, timeout=300)
        assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"

    async def pool_and_runs():
        async with get_client() as client:
            return await client.read_work_pool("trainium"), await client.read_flow_runs()

    pool, runs = asyncio.run(pool_and_runs())
    assert pool.type == "process" and pool.concurrency_limit == 1
    mine = [r for r in runs if r.parameters.get("paper_ids") == ["arxiv:2611.00020", "arxiv:2611.00021"]]
    assert mine and mine[0].state.is_completed()
    index = paper_index()
    assert index.get("arxiv:2611.00020").status is PaperStatus.EXECUTED
    assert index.get("arxiv:2611.00021").status is PaperStatus.EXECUTION_FAILED


def test_the_worker_part_needs_no_scraping_or_llm_packages():
    code = ("import sys, flows.execute_batch; "
            "print([m for m in ('aiohttp', 'lxml', 'pymupdf', 'fitz', 'langchain_aws', 'langchain_core') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    reqs = [line.lower() for line in (REPO / "deployments/trn1/requirements-worker.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert not [r for r in reqs if r.startswith(("aiohttp", "lxml", "pymupdf", "langchain"))]
    unit = (REPO / "deployments/trn1/annapurna-worker.service").read_text()
    assert "prefect worker start --pool trainium" in unit
    script = (REPO / "deployments/trn1/bootstrap.sh").read_text()
    for path in ("requirements-neuron.txt", "requirements-worker.txt", "annapurna-worker.service"):
        assert path in script and (REPO / "deployments/trn1" / path).exists()
