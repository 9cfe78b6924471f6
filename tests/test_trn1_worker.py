"""The trn1 execution path, on real programs through the real sandbox: what a Neuron job
sees (a writable compile cache and nothing else outside its directory, the Neuron tools on
PATH, the pool's variables and never credentials), the isolation floor, the device probe
that says what a program really computed on, `annapurna health` and `annapurna execute`,
the S3 compile cache synced outside the sandbox, and flows run from the worker's own
checkout. No NeuronCore or GPU exists here: Neuron jobs run their Neuron environment on
the CPU, which is exactly what the device probe must catch."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import REPO
from test_trainium_worker import LEVELS, TRAIN, leftovers

from trainium_worker.devices import Device
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.runner import Runner, device_mismatch
from trainium_worker.sandbox import IsolationTooWeak

CLI = str(Path(sys.executable).with_name("annapurna"))
NEURON = Device(kind="neuron", index=0)


def run_on(device: Device, code: str, config: WorkerConfig) -> tuple:
    result, files = asyncio.run(Runner([device], config).run(Job(paper_id="arxiv:trn1.test", code=code,
                                                                 limits=Limits(timeout_s=120)), device))
    return result, files


@pytest.mark.skipif("bwrap" not in LEVELS, reason="bubblewrap is not usable here")
def test_a_neuron_job_can_lock_in_the_compile_cache_and_write_nothing_else_outside(tmp_path):
    cache = Path.home() / ".cache" / f"annapurna-test-cache-{uuid.uuid4().hex[:8]}"  # outside /tmp, like the real one
    try:
        code = textwrap.dedent(f'''
            import os
            def attempt(path):
                try:
                    with open(path, "w") as f:
                        f.write("x")
                    return "ok"
                except OSError as e:
                    return type(e).__name__
            print("cache:", attempt({str(cache / "neuronxcc.lock")!r}))
            print("beside cache:", attempt({str(cache.parent / "escaped.txt")!r}))
            print("root:", attempt("/escaped.txt"))
            print("job dir:", attempt("outputs/here.txt"))
            print("cc flags:", os.environ["NEURON_CC_FLAGS"])
        ''')
        result, files = run_on(NEURON, code, WorkerConfig(isolation="bwrap", compile_cache=str(cache)))
        assert "cache: ok" in result.stdout and "job dir: ok" in result.stdout, result.stdout + result.stderr
        assert "beside cache: OSError" in result.stdout and "root: OSError" in result.stdout
        assert f"cc flags: --cache_dir={cache}" in result.stdout
        assert (cache / "neuronxcc.lock").exists() and not (cache.parent / "escaped.txt").exists()
        assert files == {"outputs/here.txt": b"x"}
        assert result.error == "ran on CPU, not on the NeuronCore" and not result.success  # no NeuronCore here
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.mark.parametrize("level", LEVELS)
def test_path_holds_the_tool_directories_and_pool_variables_pass_but_credentials_never(level, tmp_path, monkeypatch):
    tools = tmp_path / "neuron-bin"
    tools.mkdir()
    (tools / "neuronx-cc").write_text("#!/bin/sh\necho neuronx-cc 2.24 fake\n")
    (tools / "neuronx-cc").chmod(0o755)
    for name, value in {"NEURON_RT_LOG_LEVEL": "WARNING", "NEURON_FUSE_SOFTMAX": "1", "MALLOC_ARENA_MAX": "64",
                        "XLA_FLAGS": "--xla_dump_to=x", "PJRT_DEVICE": "CPU", "TEAM_SETTING": "kept",
                        "AWS_SECRET_ACCESS_KEY": "leak", "AWS_ACCESS_KEY_ID": "leak", "PREFECT_API_KEY": "leak",
                        "PREFECT_API_URL": "http://leak", "NEURON_UPLOAD_TOKEN": "leak", "XLA_PASSWORD": "leak",
                        "OTHER": "not passed"}.items():
        monkeypatch.setenv(name, value)
    code = textwrap.dedent('''
        import json, os, shutil, subprocess
        print(json.dumps({"env": dict(os.environ), "cc": subprocess.run(["neuronx-cc"], capture_output=True,
                          text=True).stdout.strip(), "which": shutil.which("neuronx-cc")}))
    ''')
    config = WorkerConfig(isolation=level, tool_paths=[str(tools)], pass_env=["TEAM_SETTING", "AWS_ACCESS_KEY_ID"],
                          compile_cache=str(tmp_path / "cache"), min_isolation="process-group")
    result, _ = run_on(NEURON, code, config)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    env = seen["env"]
    path = env["PATH"].split(os.pathsep)
    assert path[:2] == [str(Path(sys.executable).parent), str(tools)]
    assert seen["cc"] == "neuronx-cc 2.24 fake" and seen["which"] == str(tools / "neuronx-cc")
    assert {k: env.get(k) for k in ("NEURON_RT_LOG_LEVEL", "NEURON_FUSE_SOFTMAX", "MALLOC_ARENA_MAX", "XLA_FLAGS",
                                    "TEAM_SETTING")} == {"NEURON_RT_LOG_LEVEL": "WARNING", "NEURON_FUSE_SOFTMAX": "1",
                                                         "MALLOC_ARENA_MAX": "64", "XLA_FLAGS": "--xla_dump_to=x",
                                                         "TEAM_SETTING": "kept"}
    assert env["PJRT_DEVICE"] == "NEURON" and env["NEURON_RT_VISIBLE_CORES"] == "0"  # the slot wins over the pool
    leaked = [k for k, v in env.items() if v == "leak" or k.startswith(("AWS_", "PREFECT_API"))]
    assert leaked == [] and "OTHER" not in env


def test_a_worker_below_its_isolation_floor_refuses_in_one_line():
    with pytest.raises(IsolationTooWeak) as e:
        Runner([Device(kind="cpu", index=0)], WorkerConfig(isolation="process-group", min_isolation="bwrap"))
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("isolation 'process-group' is below ANNAPURNA_MIN_ISOLATION=bwrap: refusing")
    with pytest.raises(IsolationTooWeak, match="ANNAPURNA_MIN_ISOLATION=bwrap"):
        Runner([NEURON], WorkerConfig(isolation="process-group"))  # NeuronCores: the floor is bwrap by default
    Runner([Device(kind="cpu", index=0)], WorkerConfig(isolation="process-group"))  # CPU: process-group is enough


def test_the_probe_says_what_a_program_computed_on():
    cpu_result, _ = run_on(Device(kind="cpu", index=0), TRAIN, WorkerConfig())
    assert cpu_result.success and cpu_result.ran_on == "cpu"
    on_gpu_slot, _ = run_on(Device(kind="cuda", index=0), TRAIN, WorkerConfig())
    assert not on_gpu_slot.success and on_gpu_slot.ran_on == "cpu"
    assert on_gpu_slot.error == "ran on CPU, not on the GPU" and on_gpu_slot.return_code == 0
    hard_exit, _ = run_on(NEURON, "import os\nprint('bye')\nos._exit(0)\n", WorkerConfig(min_isolation="process-group"))
    assert hard_exit.ran_on is None and hard_exit.error.startswith("could not tell what it ran on")
    assert device_mismatch(NEURON, "neuron") is None and device_mismatch(NEURON, "xla:cpu") == \
        "ran on xla:cpu, not on the NeuronCore"
    assert device_mismatch(Device(kind="cuda", index=1), "cuda") is None


# -- the commands ----------------------------------------------------------------------
def annapurna(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_health_reports_the_trainium_pool_as_the_server_sees_it(home, prefect_server):
    subprocess.run([sys.executable, "-m", "deployments.pools"], cwd=REPO, check=True, timeout=120,
                   env={**os.environ, "PREFECT_API_URL": prefect_server})
    h = json.loads(annapurna("health", "--json", env={"PREFECT_API_URL": prefect_server}).stdout)
    assert h["pool"]["name"] == "trainium" and h["pool"]["api"] == prefect_server and "error" not in h["pool"]
    assert h["pool"]["status"] in ("NOT_READY", "READY", "PAUSED") and h["pool"]["workers_online"] >= 0


def test_health_json_fields_and_an_unhealthy_exit(home):
    out = annapurna("health", "--json")
    assert out.returncode == 0, out.stderr
    h = json.loads(out.stdout)
    assert h["status"] == "ok" and h["reasons"] == [] and h["neuron_available"] is False
    assert h["cores"] == ["cpu:0", "cpu:1"] and h["working_dir"] == str(home / "jobs")
    assert h["max_execution_time"] == 600 and h["versions"]["torch"].startswith("2.13.0")
    assert set(h["versions"]) == {"torch", "torch-neuronx", "torch-xla", "neuronx-cc", "libneuronxla"}
    assert h["isolation"] == LEVELS[0] and h["min_isolation"] == "process-group" and h["meets_min_isolation"]
    assert h["compile_cache_writable_in_sandbox"] is None and h["disk_free_gb"] > 0
    assert h["pool"]["name"] == "trainium" and h["pool"]["error"] == "PREFECT_API_URL is not set"
    bad = annapurna("health", "--json", env={"ANNAPURNA_ISOLATION": "process-group", "ANNAPURNA_MIN_ISOLATION": "bwrap"})
    assert bad.returncode == 1 and json.loads(bad.stdout)["meets_min_isolation"] is False
    assert "unhealthy: isolation 'process-group' is below ANNAPURNA_MIN_ISOLATION=bwrap" in bad.stderr


@pytest.mark.skipif("bwrap" not in LEVELS, reason="bubblewrap is not usable here")
def test_health_checks_the_compile_cache_from_inside_the_sandbox(tmp_path):
    from trainium_worker.health import cache_writable_in_sandbox

    cache = Path.home() / ".cache" / f"annapurna-test-cache-{uuid.uuid4().hex[:8]}"
    try:
        assert cache_writable_in_sandbox(WorkerConfig(compile_cache=str(cache), work_root=tmp_path), "bwrap")
        cache.chmod(0o555)
        if os.geteuid() != 0:  # root writes through permissions; the sandbox's read-only root is what counts
            assert not cache_writable_in_sandbox(WorkerConfig(compile_cache=str(cache), work_root=tmp_path), "bwrap")
    finally:
        cache.chmod(0o755)
        shutil.rmtree(cache, ignore_errors=True)


PROGRAMS = {  # program, extra flags, what the result must say
    "timeout": ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)\n",
                ["--timeout", "2"], lambda r: r["error"] == "timeout after 2 s" and r["timeout"]),
    "traceback": ("raise ValueError('broken on purpose')\n", [],
                  lambda r: r["error"] == "nonzero exit 1" and "ValueError: broken on purpose" in r["stderr"]),
    "memory hog": ("import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n    time.sleep(0.01)\n",
                   ["--memory-mb", "300"], lambda r: r["error"].startswith("memory limit")),
    "output flood": ("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 2**18 + '\\n')\n"
                     "print('METRICS: {\"loss\": 0.5}')\n", [],
                     lambda r: r["success"] and r["metrics"] == {"loss": 0.5} and r["stdout_bytes"] > 50 * 2**20),
    "credentials": ("import os\nprint('secret:', os.environ.get('AWS_SECRET_ACCESS_KEY'))\n", [],
                    lambda r: r["success"] and "secret: None" in r["stdout"]),
    "training": (TRAIN, [], lambda r: r["success"] and r["ran_on"] == "cpu" and r["metrics"]["step"] == 59),
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_execute_runs_a_file_through_the_worker_path(name, home, tmp_path):
    code, flags, check = PROGRAMS[name]
    program = tmp_path / "program.py"
    program.write_text(code)
    out = annapurna("execute", str(program), "--device", "cpu:0", "--json", *flags,
                    env={"AWS_SECRET_ACCESS_KEY": "do-not-leak"})
    result = json.loads(out.stdout)
    assert check(result), (name, {k: result[k] for k in ("success", "error", "metrics", "ran_on")}, result["stderr"][-500:])
    assert out.returncode == (0 if result["success"] else 1)
    assert result["paper_id"] == "file:program.py" and result["isolation"] == LEVELS[0]


def test_execute_a_fork_escapee_leaves_nothing_running(home, tmp_path):
    token = uuid.uuid4().hex[:12]
    program = tmp_path / "escape.py"
    program.write_text(textwrap.dedent(f'''
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "300", "{token}"])
            os._exit(0)
        time.sleep(0.5)
        print("parent done")
    '''))
    out = annapurna("execute", str(program), "--device", "cpu:0", "--json")
    assert json.loads(out.stdout)["success"] and leftovers(token) == []


@pytest.mark.skipif("bwrap" not in LEVELS, reason="bubblewrap is not usable here")
def test_execute_no_network_unless_asked_and_no_writes_outside(home, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    program = tmp_path / "net.py"
    program.write_text(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')\n")
    try:
        blocked = json.loads(annapurna("execute", str(program), "--device", "cpu:0", "--json").stdout)
        allowed = json.loads(annapurna("execute", str(program), "--device", "cpu:0", "--allow-network", "--json").stdout)
    finally:
        listener.close()
    assert not blocked["success"] and "connected" not in blocked["stdout"]
    assert allowed["success"] and "connected" in allowed["stdout"]
    outside = tmp_path / "write.py"
    outside.write_text(f"open({str(REPO / 'escaped.txt')!r}, 'w').write('x')\n")
    wrote = json.loads(annapurna("execute", str(outside), "--device", "cpu:0", "--json").stdout)
    assert not wrote["success"] and "Read-only file system" in wrote["stderr"] and not (REPO / "escaped.txt").exists()


def test_execute_on_a_neuron_slot_here_builds_the_neuron_environment_and_says_so(home, tmp_path):
    program = tmp_path / "train.py"
    program.write_text(TRAIN + "\nimport os\nprint('flags:', os.environ['NEURON_CC_FLAGS'])\n")
    out = annapurna("execute", str(program), "--device", "neuron:0", "--json")
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["error"] == "ran on CPU, not on the NeuronCore" and result["ran_on"] == "cpu"
    assert result["device"] == "neuron:0" and result["neuron_cores"] == [0] and "flags: --cache_dir=" in result["stdout"]
    assert any("no NeuronCore on this machine" in n for n in result["notes"])
    assert annapurna("execute", str(program), "--device", "tpu:0").returncode == 2


# -- around the worker: retries of failed compilations, the S3 cache, the floor in the flow
def test_retry_failed_compilation_after_a_failed_or_killed_run_not_for_a_first_run(home):
    from test_execute_batch import seed

    from blocks.paper import PaperStatus
    from blocks.settings import paper_index
    from tasks.execute import mark_started, ran_before_without_success

    index = paper_index()
    seed("arxiv:2611.10001", TRAIN)
    fresh = index.get("arxiv:2611.10001")
    assert not ran_before_without_success(fresh)  # a first run answers from the cache
    started = mark_started(index, fresh.id, 1)
    assert ran_before_without_success(started)  # began, never reported: killed mid-compile
    failed = started.advance(PaperStatus.QUEUED).advance(PaperStatus.EXECUTION_FAILED, "timeout after 600 s")
    assert ran_before_without_success(failed.model_copy(update={"extra": {}}))


def test_s3_compile_cache_is_synced_outside_the_sandbox(moto_server, tmp_path):
    import boto3

    from tasks.execute import sync_compile_cache

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="neuron-cache")
    s3.put_object(Bucket="neuron-cache", Key="trn1/neuronxcc-2.24/MODULE_1/model.neff", Body=b"neff-1")
    local = tmp_path / "cache"
    url = "s3://neuron-cache/trn1"
    assert sync_compile_cache(url, str(local), "down", moto_server, "us-east-1") == 1
    assert (local / "neuronxcc-2.24/MODULE_1/model.neff").read_bytes() == b"neff-1"
    assert sync_compile_cache(url, str(local), "down", moto_server, "us-east-1") == 0  # nothing new
    (local / "neuronxcc-2.24/MODULE_2").mkdir()
    (local / "neuronxcc-2.24/MODULE_2/model.neff").write_bytes(b"neff-2")
    (local / "neuronxcc-2.24/MODULE_2/compile.lock").write_bytes(b"")  # locks stay local
    assert sync_compile_cache(url, str(local), "up", moto_server, "us-east-1") == 1
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="neuron-cache")["Contents"])
    assert keys == ["trn1/neuronxcc-2.24/MODULE_1/model.neff", "trn1/neuronxcc-2.24/MODULE_2/model.neff"]


def test_execute_batch_below_the_floor_fails_before_queueing_anything(home, prefect_server, monkeypatch):
    from test_execute_batch import seed

    from blocks.settings import paper_index
    from flows.execute_batch import execute_batch

    seed("arxiv:2611.10002", TRAIN)
    monkeypatch.setenv("ANNAPURNA_ISOLATION", "process-group")
    monkeypatch.setenv("ANNAPURNA_MIN_ISOLATION", "bwrap")
    state = asyncio.run(execute_batch(["arxiv:2611.10002"], return_state=True))
    assert state.is_failed()
    with pytest.raises(IsolationTooWeak, match="below ANNAPURNA_MIN_ISOLATION=bwrap"):
        state.result()
    assert paper_index().get("arxiv:2611.10002").status == "generated"  # not stranded as queued


def test_a_deployment_made_in_one_checkout_runs_from_the_workers_own(home, prefect_server, tmp_path):
    """`prefect deploy` from a copy of the project that is then deleted (the laptop), and a
    worker started elsewhere whose ANNAPURNA_CHECKOUT is this checkout (the trn1 machine)."""
    from prefect import get_client

    laptop = tmp_path / "laptop-checkout"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files + ["deployments/pull.py"]:
        if (REPO / name).is_file():
            (laptop / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, laptop / name)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ANNAPURNA_HOME": str(home), "COLUMNS": "200"}
    env.pop("ANNAPURNA_CHECKOUT", None)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "prefect"), "work-pool", "create", "default", "--type", "process"], env=env,
                   capture_output=True, timeout=120)
    deployed = subprocess.run([str(bin_dir / "prefect"), "--no-prompt", "deploy", "--name", "recent"], cwd=laptop,
                              env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    shutil.rmtree(laptop)  # the deploying machine's directory is gone
    ran = subprocess.run([str(bin_dir / "prefect"), "deployment", "run", "process-papers/recent"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    worker = subprocess.run([str(bin_dir / "prefect"), "worker", "start", "--pool", "default", "--run-once"],
                            cwd=elsewhere, env={**env, "ANNAPURNA_CHECKOUT": str(REPO)}, capture_output=True,
                            text=True, timeout=300)

    async def last_run():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("process-papers/recent")
            runs = [r for r in await client.read_flow_runs() if r.deployment_id == deployment.id]
            return deployment, runs

    deployment, runs = asyncio.run(last_run())
    assert deployment.pull_steps == [{"deployments.pull.enter_checkout": {}}]
    assert runs and runs[0].state.is_completed(), (runs[0].state if runs else None, worker.stdout[-3000:])


XLA_PYTHON = os.environ.get("PREFLIGHT_TEST_PYTHON")
XLA_TRAIN = textwrap.dedent('''
    import json, os
    os.environ["PJRT_DEVICE"] = "CPU"  # no NeuronCore here: XLA on the host CPU
    import torch, torch_xla.core.xla_model as xm
    device = xm.xla_device()
    x = torch.randn(64, 4, device=device); y = x.sum(dim=1, keepdim=True)
    model = torch.nn.Linear(4, 1).to(device); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        loss = ((model(x) - y) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step(); xm.mark_step()
    print("METRICS: " + json.dumps({"loss": loss.item()}))
''')


@pytest.mark.skipif(not XLA_PYTHON, reason="PREFLIGHT_TEST_PYTHON is unset: `make test` builds the torch-xla "
                                           "interpreter (`make preflight-env`) and sets it")
def test_the_probe_sees_xla_executions_and_their_device_type(tmp_path):
    config = WorkerConfig(python=XLA_PYTHON, compile_cache=str(tmp_path / "cache"), min_isolation="process-group")
    on_cpu_slot, _ = run_on(Device(kind="cpu", index=0), XLA_TRAIN, config)
    assert on_cpu_slot.success and on_cpu_slot.ran_on == "xla:cpu", on_cpu_slot.stderr[-2000:]
    on_neuron_slot, _ = run_on(NEURON, XLA_TRAIN, config)
    assert on_neuron_slot.return_code == 0 and on_neuron_slot.ran_on == "xla:cpu"
    assert on_neuron_slot.error == "ran on xla:cpu, not on the NeuronCore"


def test_the_probe_still_runs_the_sitecustomize_it_shadows(tmp_path):
    from trainium_worker.runner import PROBE_DIR

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIRS_RAN'] = 'yes'\n")
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('THEIRS_RAN'))"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": f"{PROBE_DIR}:{theirs}",
                                         "ANNAPURNA_PROBE_FILE": str(tmp_path / "probe.json")})
    assert out.stdout.strip() == "yes" and json.loads((tmp_path / "probe.json").read_text()) == {"ran_on": "cpu"}
