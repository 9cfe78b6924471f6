"""The static checks on generated programs: for each rule, a program that trips it (with the
line) and one that does not. The clean program follows the execution contract: the XLA
device, mark_step in the loop, METRICS printed."""

from __future__ import annotations

import pytest

from tasks.codegen import advisories, static_check
from tasks.program_checks import check_program

CLEAN = """import json
import torch
import torch_xla.core.xla_model as xm

device = xm.xla_device()
model = torch.nn.Linear(4, 1).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(32, 4, device=device)
for step in range(10):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    xm.mark_step()
print("METRICS: " + json.dumps({"training_loss": 0.0}))
"""


def with_line(code: str, line: str, at: int = 6) -> str:
    lines = CLEAN.splitlines()
    return "\n".join(lines[:at] + [line] + lines[at:]) + "\n"


def test_the_clean_program_has_no_finding():
    assert check_program(CLEAN) == []


TRIPS = {  # the line inserted at line 7 -> (rule, blocking, message fragment)
    "model = model.to('cuda')": ("cuda", True, "hard-coded .to('cuda')"),
    "model = model.to(device='cuda:0')": ("cuda", True, "hard-coded .to('cuda')"),
    "model = model.cuda()": ("cuda", True, "hard-coded .cuda()"),
    "dev = torch.device('cuda')": ("cuda", False, "hard-coded torch.device('cuda')"),
    "torch.cuda.synchronize()": ("cuda", True, "calls torch.cuda.synchronize()"),
    "ok = torch.cuda.is_available()": ("cuda", False, "calls torch.cuda.is_available()"),
    "w = torch.hub.load('pytorch/vision', 'resnet18')": ("hub", True, "torch.hub downloads"),
    "import urllib.request": ("network", True, "imports 'urllib.request'"),
    "import http.client": ("network", True, "imports 'http.client'"),
    "import socket": ("network", True, "imports 'socket'"),
    "import requests": ("network", True, "imports 'requests'"),
    "data = torch.load(make(download=True))": ("network", True, "download=True"),
    "import os; os.system('nvidia-smi')": ("process", True, "calls os.system()"),
    "import subprocess": ("process", True, "imports 'subprocess'"),
    "cmd = 'pip install einops'": ("process", True, "runs pip"),
    "import torchvision": ("import", True, "imports 'torchvision'"),
}


@pytest.mark.parametrize("line", TRIPS)
def test_each_rule_trips_with_its_line(line):
    rule, blocking, fragment = TRIPS[line]
    found = [f for f in check_program(with_line(CLEAN, line)) if f.rule == rule]
    assert found and found[0].line == 7 and found[0].blocking is blocking and fragment in found[0].message, found
    assert (f"line 7: {found[0].message}" in static_check(with_line(CLEAN, line))) is blocking
    assert (f"line 7: {found[0].message}" in advisories(with_line(CLEAN, line))) is not blocking


def test_xla_contract_findings():
    no_sync = CLEAN.replace("    xm.mark_step()\n", "")
    assert [(f.line, f.rule, f.blocking) for f in check_program(no_sync)] == [(9, "xla", False)]
    assert "never calls xm.mark_step()" in check_program(no_sync)[0].message
    assert check_program(CLEAN.replace("xm.mark_step()", "torch_xla.sync()")) == []
    cpu_only = CLEAN.replace("xm.xla_device()", "torch.device('cpu')")
    assert [f.message for f in check_program(cpu_only)] == ["never selects the XLA device (xm.xla_device() / torch_xla.device())"]
    guarded = CLEAN.replace("import torch_xla.core.xla_model as xm\n",
                            "try:\n    import torch_xla.core.xla_model as xm\nexcept ImportError:\n    xm = None\n")
    found = check_program(guarded)
    assert [(f.line, f.rule, f.blocking) for f in found] == [(3, "xla", False)] and "falls back" in found[0].message


def test_training_loop_and_metrics_rules():
    no_loop = "import torch\nprint('METRICS: {}')\n"
    assert "no training loop" in static_check(no_loop)[0]
    hidden = CLEAN.replace('print("METRICS: " + json.dumps({"training_loss": 0.0}))',
                           'line = "METRICS: " + json.dumps({"training_loss": 0.0})')
    assert static_check(hidden) == ["`METRICS:` appears only outside print calls: the worker reads printed lines"]
    silent = CLEAN.replace('print("METRICS: " + json.dumps({"training_loss": 0.0}))', "pass")
    assert static_check(silent) == ["never prints a `METRICS: {json}` line"]


def test_a_deeply_nested_expression_is_a_finding_not_a_crash():
    deep = "x = " + "(" * 5000 + "1" + ")" * 5000 + "\n"
    found = check_program(deep)
    assert found and found[0].rule == "syntax" and found[0].message.startswith("does not parse")
    chain = "x = 1" + " + 1" * 100000 + "\n"
    assert isinstance(check_program(chain), list)


def test_a_loop_inside_the_synced_training_loop_is_fine():
    code = """import json, torch
import torch_xla.core.xla_model as xm
device = xm.xla_device()
models = [torch.nn.Linear(4, 1).to(device) for _ in range(2)]
opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
x = torch.randn(8, 4, device=device)
for step in range(10):
    for m, opt in zip(models, opts):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    xm.mark_step()
print("METRICS: {}")
"""
    assert check_program(code) == []
    assert [f.line for f in check_program(code.replace("    xm.mark_step()\n", ""))] == [7]
