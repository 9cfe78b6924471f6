"""The torch-xla CPU preflight on real programs through the real sandbox and the real
preflight interpreter (`make test` builds it: torch 2.9.0 + torch-xla 2.9.0): a program that
follows the contract passes; each contract-breaking kind fails with its reason and the
program line; a failed preflight is recorded like a run, so the repair prompt carries the
report, and the program is never dispatched."""

from __future__ import annotations

import asyncio
import os
import textwrap

import pytest

from trainium_worker.job import WorkerConfig
from trainium_worker.preflight import PreflightLimits, preflight

PYTHON = os.environ.get("PREFLIGHT_TEST_PYTHON")
pytestmark = pytest.mark.skipif(
    not PYTHON or not os.path.exists(PYTHON),
    reason="PREFLIGHT_TEST_PYTHON is unset or missing: `make test` builds the torch-xla interpreter (make preflight-env)")

HEAD = """import json, time, torch
import torch_xla.core.xla_model as xm
device = xm.xla_device()
torch.manual_seed(0)
x = torch.randn(64, 8, device=device); y = x.sum(dim=1, keepdim=True)
model = torch.nn.Linear(8, 1).to(device); opt = torch.optim.SGD(model.parameters(), lr=0.05)
"""
GOOD = HEAD + """for step in range(20):
    opt.zero_grad(); loss = torch.nn.functional.mse_loss(model(x), y); loss.backward(); opt.step(); xm.mark_step()
    if step % 4 == 3:
        print("METRICS: " + json.dumps({"step": step, "loss": loss.item()}))
"""
ITEM_EVERY_STEP = HEAD + """for step in range(20):
    opt.zero_grad(); loss = torch.nn.functional.mse_loss(model(x), y); loss.backward(); opt.step(); xm.mark_step()
    a, b, c = loss.item(), model.weight.sum().item(), model.bias.sum().item()
"""
DATA_DEPENDENT = HEAD + """for step in range(40):
    opt.zero_grad()
    keep = torch.nonzero(x[:, step % 8] > 0).squeeze(1)
    loss = model(x[keep]).pow(2).mean(); loss.backward(); opt.step(); xm.mark_step()
"""
NO_MARK_STEP = HEAD + """t0 = time.time()
while time.time() - t0 < 20:
    opt.zero_grad(); loss = torch.nn.functional.mse_loss(model(x), y); loss.backward(); opt.step()
"""
HARD_CODED_CUDA = """import torch
device = torch.device("cuda")
model = torch.nn.Linear(8, 1).to(device)
"""
CPU_ONLY = """import torch
model = torch.nn.Linear(8, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(5):
    opt.zero_grad(); model(torch.randn(4, 8)).sum().backward(); opt.step()
"""
LIMITS = PreflightLimits(timeout_s=120, max_compilations=10, first_sync_s=4)


def run(code: str):
    return asyncio.run(preflight(code, PYTHON, WorkerConfig(min_isolation="process-group"), LIMITS))


def test_a_program_that_follows_the_contract_passes():
    report, result = run(GOOD)
    assert report.passed and report.ran_on == "xla:cpu" and report.mark_steps == 20, report.text()
    assert report.compilations <= 3 and report.transfers_per_step <= 1 and not report.fallbacks
    assert result.success and result.device == "xla:cpu (preflight)"


def test_item_every_step_fails_on_transfers_with_its_line():
    report, result = run(ITEM_EVERY_STEP)  # the watchdog may stop it before its 20 steps end
    assert not report.passed and report.transfers_per_step > 2  # 3 per step, minus a snapshot's lag
    assert any("device-to-host transfers per step" in r for r in report.reasons)
    assert any(line.startswith("program.py:9 ") for line in report.lines), report.lines  # the .item() line
    assert result.error.startswith("preflight: ") and result.stderr.rstrip().endswith(report.text().splitlines()[-1])


def test_data_dependent_shapes_are_stopped_early_with_the_fallback_and_line():
    report, _ = run(DATA_DEPENDENT)
    assert report.reasons == ["stopped early: 1 ops fell back to the CPU (nonzero)"], report.text()
    assert "nonzero" in report.fallbacks
    many_graphs, _ = asyncio.run(preflight(DATA_DEPENDENT, PYTHON, WorkerConfig(min_isolation="process-group"),
                                           LIMITS.model_copy(update={"max_fallback_ops": 1000})))
    assert many_graphs.reasons[0].startswith("stopped early: ") and "graphs compiled, over the limit of 10" in \
        many_graphs.reasons[0], many_graphs.text()
    assert any(line.startswith("program.py:9 ") for line in report.lines), report.lines  # the torch.nonzero line


def test_no_mark_step_is_stopped_by_the_watchdog():
    report, result = run(NO_MARK_STEP)
    assert not report.passed and "no mark_step within 4 s of XLA work" in report.reasons[0], report.text()
    assert result.execution_time < 19
    unsynced, _ = asyncio.run(preflight(NO_MARK_STEP.replace("< 20", "< 3"), PYTHON, WorkerConfig(min_isolation="process-group"),
                                        LIMITS.model_copy(update={"first_sync_s": 60})))
    assert unsynced.reasons == ["built XLA tensors but never executed a graph: no mark_step (one giant graph)"]


def test_hard_coded_cuda_and_cpu_only_programs_never_reach_xla():
    cuda, _ = run(HARD_CODED_CUDA)
    assert not cuda.passed and cuda.reasons[0].startswith("the program failed: nonzero exit")
    assert "never computed on the XLA device" in cuda.reasons[1]
    cpu, _ = run(CPU_ONLY)
    assert cpu.reasons == ["never computed on the XLA device (ran on cpu)"]


def test_a_failed_preflight_is_recorded_for_repair_and_never_dispatched(home, prefect_server, monkeypatch):
    from test_execute_batch import seed

    from blocks.paper import PaperStatus
    from blocks.settings import paper_index
    from flows.chain import preflight_all
    from prefect import flow
    from tasks.codegen import codegen_prompt
    from tasks.stages import failure_tail

    monkeypatch.setenv("ANNAPURNA_PREFLIGHT_PYTHON", PYTHON)
    monkeypatch.setenv("ANNAPURNA_PREFLIGHT_MAX_COMPILATIONS", "10")
    seed("arxiv:2611.20001", GOOD)
    seed("arxiv:2611.20002", ITEM_EVERY_STEP)

    @flow
    async def stage() -> list[str]:
        return await preflight_all(["arxiv:2611.20001", "arxiv:2611.20002"])

    assert asyncio.run(stage()) == ["arxiv:2611.20001"]  # only this one goes on to dispatch
    index = paper_index()
    good, bad = index.get("arxiv:2611.20001"), index.get("arxiv:2611.20002")
    assert good.status is PaperStatus.GENERATED and good.code_versions[0].preflight["passed"] is True
    assert bad.status is PaperStatus.EXECUTION_FAILED and bad.code_versions[0].preflight["passed"] is False
    assert bad.code_versions[0].training == "failed" and bad.error.startswith("preflight: ")
    tail = failure_tail(bad.code_versions[0].result_key)
    assert "preflight failed" in tail and "device-to-host transfers" in tail and "program.py:" in tail
    prompt = codegen_prompt(bad, None, "", 2, textwrap.dedent(ITEM_EVERY_STEP), tail)
    assert "preflight failed: " in prompt and "device-to-host transfers per step" in prompt  # stopped early or not
    assert "lines that triggered" in prompt
