"""The preflight's cost and what it saves: each program of the demo corpus (the recorded
codegen answers in deployments/llm_replay) and a set of contract-breaking programs, run once
under torch-xla on the CPU: wall time, graphs compiled, transfers, the verdict, and the trn1
time it would have saved (programs stopped before dispatch x the execution timeout). The
contract-breaking programs are written for this benchmark (labelled "made up" below).

    ANNAPURNA_PREFLIGHT_PYTHON=.preflight-venv/bin/python .venv/bin/python bench/preflight.py
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
from pathlib import Path

from blocks.settings import load_settings
from tasks.codegen import parse_program
from tasks.execute import preflight_limits, worker_config
from trainium_worker.preflight import preflight

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_preflight import DATA_DEPENDENT, GOOD, HARD_CODED_CUDA, ITEM_EVERY_STEP, NO_MARK_STEP  # noqa: E402


def demo_programs() -> dict[str, str]:
    found = {}
    for path in sorted((REPO / "deployments" / "llm_replay" / "codegen").glob("*.json")):
        answer = json.loads(path.read_text())["output"]["message"]["content"][0]["text"]
        found[f"demo {path.stem}"] = parse_program(answer).code
    return found


def main() -> None:
    s = load_settings()
    if not s.preflight_python:
        sys.exit("set ANNAPURNA_PREFLIGHT_PYTHON (make preflight-env prints it)")
    programs = demo_programs() | {"made up: follows the contract": GOOD, "made up: .item() x3 per step": ITEM_EVERY_STEP,
                                  "made up: data-dependent shapes": DATA_DEPENDENT, "made up: no mark_step": NO_MARK_STEP,
                                  "made up: hard-coded cuda": HARD_CODED_CUDA}
    limits, config = preflight_limits(s), worker_config(s)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"limits: {limits.max_compilations} graphs, first sync {limits.first_sync_s:g} s, "
          f"{limits.max_transfers_per_step:g} transfers/step; execution timeout {s.execution_timeout_s:g} s")
    print(f"{'program':<42} {'wall s':>7} {'graphs':>6} {'steps':>6} {'xfer/step':>9} {'fallbacks':>9}  verdict")
    stopped = total = 0.0
    for name, code in programs.items():
        report, _ = asyncio.run(preflight(code, s.preflight_python, config, limits))
        total += report.wall_time_s
        stopped += not report.passed
        verdict = "pass" if report.passed else "FAIL: " + report.reasons[0][:70]
        print(f"{name:<42} {report.wall_time_s:>7.1f} {report.compilations:>6} {report.mark_steps:>6} "
              f"{report.transfers_per_step:>9.1f} {sum(report.fallbacks.values()):>9}  {verdict}")
    print(f"{int(stopped)} of {len(programs)} programs stopped before dispatch: up to "
          f"{stopped * s.execution_timeout_s / 3600:.2f} trn1 instance-hours not spent (at the {s.execution_timeout_s:g} s "
          f"timeout each, ${stopped * s.execution_timeout_s / 3600 * s.trn1_price_per_hour:.2f} at "
          f"${s.trn1_price_per_hour}/h), for {total:.0f} s of preflight on this machine's CPU")


if __name__ == "__main__":
    main()
