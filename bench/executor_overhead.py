"""The executor's cost: (1) per-job overhead, from the runner being asked to run a job to
the program's first line, against plain `python -c` started with subprocess in the same
run, for every isolation level that works here; (2) a batch of 10 CPU-bound jobs on 2
slots against 1 slot.

    .venv/bin/python bench/executor_overhead.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time

from trainium_worker.devices import Device
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.runner import Runner
from trainium_worker.sandbox import detect

FIRST_LINE = "import time; print(time.time(), flush=True)\n"
CPU_BOUND = "x = 0\nfor i in range(12_000_000):\n    x += i * i\nprint('METRICS: {\"x\": %d}' % (x % 1000))\n"


def plain_python(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.time()
        out = subprocess.run([sys.executable, "-u", "-c", FIRST_LINE], capture_output=True, text=True)
        times.append(float(out.stdout) - t)
    return statistics.median(times)


def sandboxed(level: str, repeat: int) -> float:
    runner = Runner([Device(kind="cpu", index=0)], WorkerConfig(isolation=level))
    times = []
    for _ in range(repeat):
        t = time.time()
        result, _ = asyncio.run(runner.run(Job(paper_id="arxiv:bench", code=FIRST_LINE, limits=Limits(timeout_s=30)),
                                           runner.devices[0]))
        times.append(float(result.stdout.split()[0]) - t)
    return statistics.median(times)


def batch(slots: int) -> float:
    runner = Runner([Device(kind="cpu", index=i) for i in range(slots)], WorkerConfig(cpu_slots=slots))
    jobs = [Job(paper_id=f"arxiv:cpu.{i}", code=CPU_BOUND, limits=Limits(timeout_s=300)) for i in range(10)]
    t = time.perf_counter()
    results = asyncio.run(runner.run_batch(jobs))
    assert all(r.success for r, _ in results)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    base = plain_python(args.repeat)
    print(f"plain `python -c` to first line: {base * 1000:.1f} ms (median of {args.repeat})")
    for level in ("bwrap", "unshare", "process-group"):
        try:
            detect(level)
        except RuntimeError:
            print(f"{level:14} not available here")
            continue
        ours = sandboxed(level, args.repeat)
        print(f"{level:14} to first line: {ours * 1000:.1f} ms, overhead {(ours - base) * 1000:+.1f} ms per job")
    one = statistics.median(batch(1) for _ in range(3))
    two = statistics.median(batch(2) for _ in range(3))
    print(f"10 CPU-bound jobs (median of 3): 1 slot {one:.2f} s, 2 slots {two:.2f} s, ratio {two / one:.2f}x")


if __name__ == "__main__":
    main()
