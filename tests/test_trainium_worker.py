"""The executor against real programs: a real PyTorch training run on CPU and real
pathological programs, under every isolation level this machine allows."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from trainium_worker.analysis import has_training_loop, lines_of_code
from trainium_worker.devices import Device, device_env, neuron_core_count
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.output import MetricsScanner, Tail
from trainium_worker.runner import Runner
from trainium_worker.sandbox import detect

def available_levels() -> list[str]:
    levels = []
    for level in ("bwrap", "unshare", "process-group"):
        try:
            detect(level)
            levels.append(level)
        except RuntimeError:
            print(f"isolation level {level} does not work on this machine: its tests are skipped")
    return levels


LEVELS = available_levels()
CPU = Device(kind="cpu", index=0)

TRAIN = textwrap.dedent('''
    import json, torch
    torch.manual_seed(0)
    device = "cpu"
    x = torch.randn(256, 8); y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[:192]), y[:192])
        loss.backward()
        opt.step()
        if step % 20 == 19:
            with torch.no_grad():
                val = torch.nn.functional.mse_loss(model(x[192:]), y[192:])
            print("METRICS:", json.dumps({"step": step, "training_loss": loss.item(), "val_mse": val.item()}))
''')


def run(code: str, level: str = "auto", device: Device = CPU, **limits) -> tuple:
    token = uuid.uuid4().hex[:12]
    runner = Runner([device], WorkerConfig(isolation=level))
    job = Job(paper_id=f"arxiv:test.{token}", code=code, limits=Limits(**{"timeout_s": 60, **limits}))
    result, files = asyncio.run(runner.run(job, device))
    return result, files, token


def leftovers(token: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if token in cmd:
            found.append(cmd)
    return found


def test_a_real_pytorch_training_run_on_cpu():
    result, _, _ = run(TRAIN)
    assert result.success and result.return_code == 0 and result.error is None, result.stderr
    assert result.has_training_loop and result.lines_of_code == 15
    assert [m["step"] for m in result.metrics_series] == [19, 39, 59]
    assert result.metrics["step"] == 59 and result.metrics["training_loss"] < result.metrics_series[0]["training_loss"]
    assert result.peak_memory_mb > 50 and result.device == "cpu:0" and result.isolation in LEVELS


@pytest.mark.parametrize("level", LEVELS)
def test_an_infinite_loop_ignoring_sigterm_is_killed_at_the_timeout(level):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('spinning', flush=True)\nwhile True:\n    pass\n"
    t = time.monotonic()
    result, _, token = run(code, level, timeout_s=1.0, grace_s=0.5)
    assert not result.success and result.timeout and result.error == "timeout after 1 s"
    assert 1.0 <= result.execution_time < 4 and time.monotonic() - t < 8
    assert "spinning" in result.stdout and leftovers(token) == []


@pytest.mark.parametrize("level", LEVELS)
def test_a_double_forked_setsid_escapee_dies_with_the_job(level):
    code = textwrap.dedent('''
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(0)
        print("parent done", flush=True)
    ''')
    result, _, token = run(code, level, timeout_s=30)
    assert result.success and "parent done" in result.stdout
    time.sleep(0.2)
    assert leftovers(token) == [], "a daemonised grandchild outlived its job"


def test_a_stdout_flood_is_capped_and_metrics_at_the_end_survive():
    code = textwrap.dedent('''
        import sys
        line = b"x" * 1023 + b"\\n"
        block = line * 1024
        for _ in range(300):          # 300 MiB
            sys.stdout.buffer.write(block)
        print('METRICS: {"training_loss": 0.25, "val_accuracy": 0.9}')
    ''')
    result, _, _ = run(code, output_bytes=1 << 20)
    assert result.success and result.stdout_bytes > 300 * 2**20
    assert result.metrics == {"training_loss": 0.25, "val_accuracy": 0.9}
    assert len(result.stdout) < (1 << 20) + 200 and result.stdout.rstrip().endswith("0.9}")
    assert any("stdout truncated" in n for n in result.notes)


def test_a_memory_hog_is_killed_for_the_whole_tree():
    code = textwrap.dedent('''
        import os, time
        os.fork()                      # two processes, each growing
        hog = []
        while True:
            hog.append(bytearray(20 * 2**20))
            time.sleep(0.01)
    ''')
    result, _, token = run(code, memory_mb=300)
    assert not result.success and result.error.startswith("memory limit (") and "> 300 MB" in result.error
    assert result.peak_memory_mb > 300 and leftovers(token) == []


def test_credentials_never_reach_the_program(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PREFECT_API_KEY",
                 "PREFECT_API_URL", "OPENREVIEW_PASSWORD", "GITHUB_TOKEN", "ANNAPURNA_OPENREVIEW_PASSWORD"):
        monkeypatch.setenv(name, "s3cr3t-value")
    code = "import os, json\nprint(json.dumps(dict(os.environ)))\n"
    result, _, _ = run(code)
    env = json.loads(result.stdout)
    assert "s3cr3t-value" not in result.stdout
    assert not [k for k in env if k.startswith(("AWS_", "PREFECT_")) or "TOKEN" in k or "PASSWORD" in k]


@pytest.mark.skipif("bwrap" not in LEVELS, reason="bubblewrap is not usable here")
def test_credential_files_in_home_are_hidden(monkeypatch, tmp_path):
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = s3cr3t\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    code = f"import os\nprint(os.listdir({str(tmp_path / '.aws')!r}))\n"
    result, _, _ = run(code, "bwrap")
    assert result.success and result.stdout.strip() == "[]"


@pytest.mark.parametrize("level", [lvl for lvl in LEVELS if lvl != "process-group"])
def test_no_network_unless_asked(level):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                pass

    stop = threading.Event()
    t = threading.Thread(target=accept)
    t.start()
    code = textwrap.dedent(f'''
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            print("connected")
        except OSError as e:
            print("blocked:", type(e).__name__)
    ''')
    try:
        closed, _, _ = run(code, level)
        runner = Runner([CPU], WorkerConfig(isolation=level))
        opened, _ = asyncio.run(runner.run(Job(paper_id="arxiv:net", code=code, allow_network=True), CPU))
    finally:
        stop.set()
        t.join()
        listener.close()
    assert closed.stdout.startswith("blocked:") and opened.stdout.strip() == "connected"
    assert len(accepted) == 1  # only the run that asked for the network got through


@pytest.mark.skipif("bwrap" not in LEVELS, reason="bubblewrap is not usable here")
def test_writing_outside_the_working_directory_fails_and_outputs_are_kept():
    outside = Path("/var/tmp") / f"escaped-{uuid.uuid4().hex}.txt"  # writable on the host, outside /tmp
    code = textwrap.dedent(f'''
        import os
        try:
            open({str(outside)!r}, "w").write("x")
            print("wrote outside")
        except OSError as e:
            print("refused:", e.strerror)
        open(os.path.join(os.environ["ANNAPURNA_OUTPUT_DIR"], "curve.csv"), "w").write("step,loss\\n1,0.5\\n")
    ''')
    result, files, _ = run(code, "bwrap")
    escaped = outside.exists()
    outside.unlink(missing_ok=True)
    assert result.stdout.strip() == "refused: Read-only file system" and not escaped
    assert files == {"outputs/curve.csv": b"step,loss\n1,0.5\n"}


def test_a_traceback_and_a_signal_are_reported():
    result, _, _ = run("def f():\n    raise ValueError('boom')\nf()\n")
    assert not result.success and result.error == "nonzero exit 1" and "ValueError: boom" in result.stderr
    result, _, _ = run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert not result.success and result.error == "killed by signal 11"


def test_a_batch_uses_every_slot_and_never_shares_one():
    code = textwrap.dedent('''
        import os, time, json
        t0 = time.time(); time.sleep(0.6)
        print("METRICS:", json.dumps({"device": os.environ["ANNAPURNA_DEVICE"], "start": t0, "end": time.time()}))
    ''')
    devices = [Device(kind="cpu", index=0), Device(kind="cpu", index=1)]
    runner = Runner(devices, WorkerConfig(cpu_slots=2))
    jobs = [Job(paper_id=f"arxiv:slot.{i}", code=code) for i in range(4)]
    t = time.monotonic()
    results = [r for r, _ in asyncio.run(runner.run_batch(jobs))]
    wall = time.monotonic() - t
    assert all(r.success for r in results) and wall < 2.2  # 4 x 0.6 s on 2 slots
    spans = sorted((r.metrics["start"], r.metrics["end"], r.metrics["device"]) for r in results)
    for dev in ("cpu:0", "cpu:1"):
        mine = [s for s in spans if s[2] == dev]
        assert len(mine) == 2 and mine[0][1] <= mine[1][0]  # one job at a time on each slot


# -- devices, environment, analysis ------------------------------------------------------
def test_neuron_discovery_and_environment(tmp_path):
    assert neuron_core_count('[{"neuron_device": 0, "nc_count": 2}]') == 2
    assert neuron_core_count("", dev_glob=str(tmp_path / "neuron*")) == 0
    for i in range(2):
        (tmp_path / f"neuron{i}").write_text("")
    assert neuron_core_count("", dev_glob=str(tmp_path / "neuron*")) == 4
    cfg = WorkerConfig(compile_cache="/var/cache/neuron")
    first = device_env(Device(kind="neuron", index=1), Job(paper_id="arxiv:1", code=""), cfg, "/w")
    assert first == {"NEURON_RT_VISIBLE_CORES": "1", "PJRT_DEVICE": "NEURON", "NEURON_CC_FLAGS": "--cache_dir=/var/cache/neuron"}
    repair = device_env(Device(kind="neuron", index=0), Job(paper_id="arxiv:1", code="", attempt=2, profile=True),
                        cfg, "/w")
    assert repair["NEURON_CC_FLAGS"] == "--cache_dir=/var/cache/neuron"  # a new version compiles new graphs anyway
    again = device_env(Device(kind="neuron", index=0), Job(paper_id="arxiv:1", code="", retry_compilation=True), cfg, "/w")
    assert again["NEURON_CC_FLAGS"] == "--cache_dir=/var/cache/neuron --retry_failed_compilation"
    assert "NEURON_COMPILE_CACHE_URL" not in again  # the sandbox has no network: S3 is synced outside it
    assert repair["NEURON_RT_INSPECT_ENABLE"] == "1" and repair["NEURON_RT_INSPECT_OUTPUT_DIR"] == "/w/profile"
    assert device_env(Device(kind="cuda", index=3), Job(paper_id="arxiv:1", code=""), cfg, "/w") == {"CUDA_VISIBLE_DEVICES": "3"}
    cpu = device_env(CPU, Job(paper_id="arxiv:1", code=""), WorkerConfig(cpu_slots=2, cpu_threads=3), "/w")
    assert cpu["OMP_NUM_THREADS"] == "3" and cpu["CUDA_VISIBLE_DEVICES"] == ""


def test_training_loop_detection_reads_the_ast():
    assert has_training_loop(TRAIN)
    assert not has_training_loop("# for x in y: loss.backward(); opt.step()\nprint('no loop')\n")
    assert not has_training_loop("for i in range(3):\n    print(i)\n")
    assert not has_training_loop("def broken(:\n")
    assert lines_of_code("# c\n\nx = 1\n  # d\ny = 2\n") == 2


def test_metrics_scanner_and_tail():
    s = MetricsScanner()
    for chunk in [b"noise\nMETRICS: {\"a\": 1", b"}\nstep METRICS: {\"a\": 2, \"b\": 3}\n", b"METRICS: [1]\n", b"METRICS: {\"c\": 4}"]:
        s.feed(chunk)
    s.close()
    assert s.series == [{"a": 1}, {"a": 2, "b": 3}, {"c": 4}] and s.merged == {"a": 2, "b": 3, "c": 4}
    assert len(s.notes) == 1 and "line 4" in s.notes[0]
    t = Tail(10)
    for chunk in (b"abcdef", b"ghijkl", b"mn"):
        t.add(chunk)
    assert t.total == 14 and t.text().endswith("efghijklmn") and "4 earlier bytes" in t.text()
