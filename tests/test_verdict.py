""""Trained", not "exited 0": real programs through the real worker, and the verdict the
worker reaches from what it measured (the loss series, the training loop, the device)."""

from __future__ import annotations

import asyncio
import textwrap

from trainium_worker.devices import Device
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.runner import Runner
from trainium_worker.verdict import VerdictRules, beats_baseline, judge

CPU = Device(kind="cpu", index=0)


def run(code: str, device: Device = CPU, **job) -> object:
    result, _ = asyncio.run(Runner([device], WorkerConfig(min_isolation="process-group")).run(
        Job(paper_id="arxiv:verdict.test", code=textwrap.dedent(code), limits=Limits(timeout_s=120), **job), device))
    return result


LOOP = '''
    import json, math, torch
    torch.manual_seed(0)
    x = torch.randn(128, 8); y = x @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1); opt = torch.optim.SGD(model.parameters(), lr={lr})
    for step in range(40):
        opt.zero_grad()
        loss = {loss}
        loss.backward()
        opt.step()
        if step % 4 == 0:
            print("METRICS:", json.dumps({{"step": step, "loss": {report}}}))
'''


def test_a_program_whose_loss_falls_trained():
    r = run(LOOP.format(lr=0.1, loss="torch.nn.functional.mse_loss(model(x), y)", report="loss.item()"))
    assert r.success and r.verdict == "trained" and r.verdict_reason.startswith("loss fell"), (r.verdict_reason, r.stderr)


def test_a_constant_loss_did_not_learn():
    r = run(LOOP.format(lr=0.0, loss="torch.nn.functional.mse_loss(model(x), y)", report="loss.item()"))
    assert r.success and r.verdict == "no_learning" and "under 5%" in r.verdict_reason


def test_a_nan_loss_diverged():
    r = run(LOOP.format(lr=0.1, loss="torch.nn.functional.mse_loss(model(x), y) * float('nan')", report="loss.item()"))
    assert r.success and r.verdict == "diverged" and r.verdict_reason == "non-finite loss"


def test_a_loss_that_blows_up_diverged():
    r = run(LOOP.format(lr=2.5, loss="torch.nn.functional.mse_loss(model(x), y)", report="min(loss.item(), 1e30)"))
    assert r.verdict == "diverged" and "rose from" in r.verdict_reason


def test_hello_world_is_not_trained_anywhere():
    on_cpu = run("print('hello')\n")
    assert on_cpu.success and on_cpu.verdict == "no_learning" and "no training loop" in on_cpu.verdict_reason
    on_neuron = run("print('hello')\n", Device(kind="neuron", index=0))
    assert not on_neuron.success and on_neuron.verdict == "failed"
    assert on_neuron.verdict_reason == "ran on CPU, not on the NeuronCore"


def test_a_timeout_failed():
    result, _ = asyncio.run(Runner([CPU], WorkerConfig()).run(
        Job(paper_id="arxiv:verdict.t", code="import time\nwhile True:\n    time.sleep(0.1)\n",
            limits=Limits(timeout_s=1, grace_s=0.5)), CPU))
    assert result.verdict == "failed" and result.verdict_reason == "timeout after 1 s"


METHOD_VS_BASELINE = '''
    import json, torch
    torch.manual_seed(0)
    x = torch.randn(256, 8); y = (x[:, :1] > 0).long().squeeze(1)
    def train(width):
        model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for step in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            yield step, loss.item(), (model(x).argmax(-1) == y).float().mean().item()
    for (step, m_loss, m_acc), (_, b_loss, b_acc) in zip(train({method}), train({baseline})):
        if step % 5 == 0:
            print("METRICS:", json.dumps({{"method/loss": m_loss, "baseline/loss": b_loss}}))
    print("METRICS:", json.dumps({{"method/accuracy": m_acc, "baseline/accuracy": {baseline_acc}}}))
'''


def test_method_against_baseline_on_the_headline_metric():
    wins = run(METHOD_VS_BASELINE.format(method=32, baseline=32, baseline_acc="b_acc - 0.2"),
               headline_metric="accuracy", better="higher")
    assert wins.verdict == "trained" and wins.headline_metric == "accuracy" and wins.beats_baseline is True
    loses = run(METHOD_VS_BASELINE.format(method=32, baseline=32, baseline_acc="min(1.0, b_acc + 0.2)"),
                headline_metric="accuracy", better="higher")
    assert loses.verdict == "trained" and loses.beats_baseline is False
    unstated = run(METHOD_VS_BASELINE.format(method=32, baseline=32, baseline_acc="b_acc - 0.2"))
    assert unstated.beats_baseline is not None  # direction read from the metric names (loss, accuracy)
    alone = run(LOOP.format(lr=0.1, loss="torch.nn.functional.mse_loss(model(x), y)", report="loss.item()"))
    assert alone.beats_baseline is None and alone.headline_metric is None


def test_rules_are_settings_and_directions_come_from_the_plan():
    series = [{"loss": v} for v in (1.0, 0.99, 0.98, 0.97, 0.96)]
    assert judge(True, None, True, series, {}, VerdictRules()).verdict == "no_learning"  # 4%
    assert judge(True, None, True, series, {}, VerdictRules(min_loss_drop=0.03)).verdict == "trained"
    assert judge(True, None, True, series[:3], {}, VerdictRules(min_loss_points=3, min_loss_drop=0.01)).verdict == "trained"
    assert beats_baseline({"method/ppl": 10.0, "baseline/ppl": 12.0}) == ("ppl", True)
    assert beats_baseline({"method/widgets": 3.0, "baseline/widgets": 2.0}) == ("widgets", None)  # direction unknown
    assert beats_baseline({"method/widgets": 3.0, "baseline/widgets": 2.0}, "widgets", "lower") == ("widgets", False)
