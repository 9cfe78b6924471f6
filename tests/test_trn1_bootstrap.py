"""deployments/trn1: bootstrap.sh, smoke.sh and the files they install.

There is no trn1 here (no Neuron device, no AWS repositories): these tests check the
scripts' syntax, shellcheck where it is installed, the exact plan `--dry-run` prints for
each supported Ubuntu and the refusal of any other OS, that a dry run runs no command that
changes the machine, that the parts that write files and restart the worker do so only when
something changed (with systemctl, apparmor_parser and sudo replaced by recorders), and
smoke.sh's checks against a stand-in `annapurna execute`. The real installation and the
smoke run on NeuronCores happen only on a trn1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRN1 = REPO / "deployments" / "trn1"
BOOTSTRAP = TRN1 / "bootstrap.sh"
SMOKE = TRN1 / "smoke.sh"
SCRIPTS = [BOOTSTRAP, SMOKE]

# Neuron SDK 2.29.0, as pinned (see the comments in bootstrap.sh and requirements-neuron.txt).
APT_PINS = {
    "aws-neuronx-dkms": "2.27.4.0",
    "aws-neuronx-runtime-lib": "2.31.24.0",
    "aws-neuronx-collectives": "2.31.24.0",
    "aws-neuronx-tools": "2.29.18.0",
}
PIP_PINS = {
    "torch-neuronx": "2.9.0.2.13.24727",
    "neuronx-cc": "2.24.5133.0",
    "libneuronxla": "2.2.16408.0",
    "torch-xla": "2.9.0",
    "torch": "2.9.1",
}

NOBLE = 'PRETTY_NAME="Ubuntu 24.04.2 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n'
JAMMY = 'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n'
CENTOS = 'NAME="CentOS Stream"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="9"\n'

# Commands a dry run must never run: each is replaced by a recorder that fails.
MUTATING = ["apt-get", "apt-mark", "add-apt-repository", "curl", "wget", "sudo", "systemctl",
            "apparmor_parser", "rsync", "chown", "install", "useradd", "neuron-ls", "pip", "pip3"]


def recorders(bin_dir: Path, log: Path, names, rc: int = 0) -> None:
    """Executables that append their name and arguments to `log` and exit with `rc`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {rc}\n')
        path.chmod(0o755)


def bash(args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=env, **kw)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ANNAPURNA_") and k not in {"PREFECT_API_URL", "PREFECT_API_KEY"}}
    env.update(extra)
    return env


def dry_run(tmp_path: Path, os_release: str, env=None) -> subprocess.CompletedProcess:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    return bash([BOOTSTRAP, "--dry-run", "--os-release", release], env=env or clean_env())


def section(out: str, title: str) -> list[str]:
    """The indented lines under a `title:` line of the plan."""
    lines = out.splitlines()
    start = lines.index(title) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        body.append(line.strip())
    return body


# --- syntax ------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = bash(["-n", script])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    if not shutil.which("shellcheck"):
        reason = "shellcheck is not installed (apt-get install -y shellcheck); bash -n still ran"
        print(f"SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    result = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- bootstrap.sh --dry-run ----------------------------------------------------------------

def test_dry_run_noble_prints_the_exact_plan(tmp_path):
    result = dry_run(tmp_path, NOBLE)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "os: ubuntu 24.04 (noble)" in out
    assert re.search(r"^python: python3 \(.*3\.12", out, re.M), out
    assert "neuron sdk: 2.29.0" in out
    assert "deb [signed-by=/etc/apt/keyrings/neuron.asc] https://apt.repos.neuron.amazonaws.com noble main" in out
    apt = section(out, "apt packages:")
    for name, version in APT_PINS.items():
        assert any(line.startswith(f"{name}={version}*") for line in apt), (name, apt)
    assert "bubblewrap" in " ".join(apt) and "python3-venv" in " ".join(apt)
    assert not any(line.startswith("python3.11") for line in apt)
    pip = section(out, "pip requirements (deployments/trn1/requirements-neuron.txt, "
                       "--extra-index-url https://pip.repos.neuron.amazonaws.com):")
    for name, version in PIP_PINS.items():
        assert f"{name}=={version}" in pip, (name, pip)
    files = section(out, "files:")
    for path in ("/etc/apt/keyrings/neuron.asc", "/etc/apt/sources.list.d/neuron.list", "/etc/annapurna/worker.env",
                 "/etc/apparmor.d/bwrap", "/etc/systemd/system/annapurna-worker.service"):
        assert any(line.startswith(path) for line in files), (path, files)
    # the steps: the venv on python3, the AppArmor profile and the bwrap check as the worker's user
    assert "sudo -u ubuntu -H -- python3 -m venv /opt/annapurna/.venv" in out
    assert "apparmor_parser -r /etc/apparmor.d/bwrap" in out
    assert "/proc/sys/kernel/apparmor_restrict_unprivileged_userns" in out
    assert "sudo -u ubuntu -H -- bwrap --unshare-all --ro-bind / / true" in out
    assert "apt-key" not in out
    assert out.rstrip().endswith("dry run done: nothing was changed.")


def test_dry_run_worker_env_and_unit(tmp_path):
    out = dry_run(tmp_path, NOBLE, env=clean_env(ANNAPURNA_DIR="/srv/annapurna", ANNAPURNA_USER="worker",
                                                  PREFECT_API_URL="http://prefect.internal:4200/api")).stdout
    env = {line.split("| ", 1)[1].split("=", 1)[0]: line.split("| ", 1)[1].split("=", 1)[1]
           for line in out.splitlines() if re.match(r"\s+\| [A-Z_]+=", line)}
    assert env["ANNAPURNA_MIN_ISOLATION"] == "bwrap"
    assert env["ANNAPURNA_CHECKOUT"] == "/srv/annapurna"
    assert env["PREFECT_API_URL"] == "http://prefect.internal:4200/api"
    assert env["PATH"].split(":")[:2] == ["/srv/annapurna/.venv/bin", "/opt/aws/neuron/bin"]
    assert "| User=worker" in out
    assert "| Environment=PATH=/srv/annapurna/.venv/bin:/opt/aws/neuron/bin:" in out
    assert "| ExecStart=/srv/annapurna/.venv/bin/prefect worker start --pool trainium" in out
    assert "@DIR@" not in out and "@USER@" not in out
    assert "PREFECT_API_URL: unset" not in out


def test_dry_run_jammy_uses_python311(tmp_path):
    result = dry_run(tmp_path, JAMMY)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "os: ubuntu 22.04 (jammy)" in out
    assert re.search(r"^python: python3\.11 ", out, re.M), out
    apt = section(out, "apt packages:")
    assert any(line.startswith("python3.11-venv") for line in apt), apt
    assert "https://apt.repos.neuron.amazonaws.com jammy main" in out
    assert "sudo -u ubuntu -H -- python3.11 -m venv /opt/annapurna/.venv" in out
    assert "deadsnakes" in out
    for name, version in APT_PINS.items():
        assert f"{name}={version}*" in out


@pytest.mark.parametrize("os_release", [CENTOS, 'ID=ubuntu\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\n',
                                        'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'],
                         ids=["centos", "ubuntu-20.04", "debian-12"])
def test_dry_run_refuses_unsupported_os(tmp_path, os_release):
    result = dry_run(tmp_path, os_release)
    assert result.returncode != 0
    assert "unsupported OS" in result.stderr
    assert "Ubuntu 24.04" in result.stderr and "Ubuntu 22.04" in result.stderr
    assert "steps:" not in result.stdout


def test_dry_run_refuses_centos_by_name(tmp_path):
    result = dry_run(tmp_path, CENTOS)
    assert result.returncode == 1
    assert "ID=centos" in result.stderr


def test_os_release_is_only_for_dry_run_and_unknown_flags_fail(tmp_path):
    release = tmp_path / "os-release"
    release.write_text(NOBLE)
    result = bash([BOOTSTRAP, "--os-release", release], env=clean_env())
    assert result.returncode != 0 and "only for --dry-run" in result.stderr
    result = bash([BOOTSTRAP, "--dry-run", "--frobnicate"], env=clean_env())
    assert result.returncode != 0 and "unknown argument" in result.stderr


def test_dry_run_runs_nothing_that_changes_the_machine(tmp_path):
    """With every installing/writing command replaced by a recorder, a dry run calls none."""
    log = tmp_path / "calls.log"
    recorders(tmp_path / "bin", log, MUTATING, rc=99)
    env = clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    for name, text in (("noble", NOBLE), ("jammy", JAMMY)):
        (tmp_path / name).mkdir()
        result = dry_run(tmp_path / name, text, env=env)
        assert result.returncode == 0, result.stderr
    assert not log.exists(), log.read_text()


def test_requirements_are_exact_pins_and_match_the_dry_run(tmp_path):
    lines = [line.strip() for line in (TRN1 / "requirements-neuron.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith(("#", "--"))]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+]*", r) for r in reqs), reqs
    assert dict(r.split("==") for r in reqs) == PIP_PINS
    assert "--extra-index-url https://pip.repos.neuron.amazonaws.com" in lines
    pip = section(dry_run(tmp_path, NOBLE).stdout,
                  "pip requirements (deployments/trn1/requirements-neuron.txt, "
                  "--extra-index-url https://pip.repos.neuron.amazonaws.com):")
    assert [p for p in pip if "==" in p] == reqs


def test_apparmor_profile_allows_userns_for_bwrap():
    text = (TRN1 / "apparmor-bwrap").read_text()
    rules = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert rules[0] == "abi <abi/4.0>,"
    assert "include <tunables/global>" in rules
    assert "profile bwrap /usr/bin/bwrap flags=(unconfined) {" in rules
    assert "userns," in rules
    assert "include if exists <local/bwrap>" in rules
    assert rules[-1] == "}"


def test_service_unit_sets_path_and_reads_worker_env():
    unit = (TRN1 / "annapurna-worker.service").read_text()
    assert "Environment=PATH=@DIR@/.venv/bin:/opt/aws/neuron/bin:" in unit
    assert "EnvironmentFile=/etc/annapurna/worker.env" in unit
    assert "User=@USER@" in unit


# --- idempotency of the parts that write and restart --------------------------------------

def source_and_run(tmp_path: Path, body: str, **env) -> subprocess.CompletedProcess:
    """Sources bootstrap.sh (which then runs nothing) with its paths under tmp_path and
    systemctl, apparmor_parser and sudo replaced by recorders, and runs `body`."""
    recorders(tmp_path / "bin", tmp_path / "calls.log", ["systemctl", "apparmor_parser", "sudo"])
    script = f"""
source {BOOTSTRAP}
DRY_RUN=0
ENV_FILE={tmp_path}/etc/annapurna/worker.env
UNIT_FILE={tmp_path}/etc/systemd/system/annapurna-worker.service
APPARMOR_PROFILE={tmp_path}/etc/apparmor.d/bwrap
USERNS_SYSCTL={tmp_path}/apparmor_restrict_unprivileged_userns
APPARMOR_LOADED={tmp_path}/profiles
INSTANCE_TYPE=trn1.2xlarge
{body}
"""
    return bash(["-c", script], env=clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                                              PREFECT_API_URL="http://prefect.internal:4200/api", **env))


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_write_if_changed_writes_only_a_difference(tmp_path):
    dest = tmp_path / "a" / "b.conf"
    body = f"""
echo one | write_if_changed {dest} 0640 && echo CHANGED || echo SAME
echo one | write_if_changed {dest} 0640 && echo CHANGED || echo SAME
echo two | write_if_changed {dest} 0640 && echo CHANGED || echo SAME
"""
    result = source_and_run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line in ("CHANGED", "SAME")] == ["CHANGED", "SAME", "CHANGED"]
    assert dest.read_text() == "two\n"
    assert oct(dest.stat().st_mode & 0o777) == "0o640"


def test_second_run_rewrites_nothing_and_restarts_nothing(tmp_path):
    (tmp_path / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    steps = "RESTART_REASONS=(); step_env; step_apparmor; step_service"
    first = source_and_run(tmp_path, steps)
    assert first.returncode == 0, first.stdout + first.stderr
    first_calls = calls(tmp_path)
    assert "systemctl daemon-reload" in first_calls
    assert "systemctl restart annapurna-worker" in first_calls
    assert any(c.startswith("apparmor_parser -r ") for c in first_calls)
    assert any("bwrap --unshare-all --ro-bind / / true" in c for c in first_calls)
    env_file = tmp_path / "etc/annapurna/worker.env"
    assert "ANNAPURNA_MIN_ISOLATION=bwrap" in env_file.read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "etc").rglob("*") if p.is_file()}
    assert len(stamps) == 3

    (tmp_path / "profiles").write_text("bwrap (unconfined)\n")  # the kernel now has it loaded
    second = source_and_run(tmp_path, steps)
    assert second.returncode == 0, second.stdout + second.stderr
    second_calls = calls(tmp_path)
    assert "systemctl restart annapurna-worker" not in second_calls
    assert "systemctl daemon-reload" not in second_calls
    assert not any(c.startswith("apparmor_parser") for c in second_calls)
    assert "systemctl start annapurna-worker" in second_calls  # a no-op when it runs
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "nothing changed" in second.stdout

    # a changed setting rewrites worker.env and restarts the worker, and nothing else
    third = source_and_run(tmp_path, steps, ANNAPURNA_STORAGE="local")
    third_calls = calls(tmp_path)
    assert "systemctl restart annapurna-worker" in third_calls
    assert "systemctl daemon-reload" not in third_calls
    assert "changed: worker.env" in third.stdout


def test_bwrap_failure_for_the_worker_user_fails_loudly(tmp_path):
    recorders(tmp_path / "bin", tmp_path / "calls.log", ["sudo"], rc=1)
    script = f"source {BOOTSTRAP}; DRY_RUN=0; USERNS_SYSCTL={tmp_path}/none; step_apparmor; echo SHOULD-NOT-GET-HERE"
    result = bash(["-c", script], env=clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}"))
    assert result.returncode != 0
    assert "SHOULD-NOT-GET-HERE" not in result.stdout
    assert "bubblewrap does not work for ubuntu" in result.stderr


# --- smoke.sh ----------------------------------------------------------------------------

def test_smoke_dry_run_prints_both_cores():
    result = bash([SMOKE, "--dry-run"], env=clean_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for core in (0, 1):
        lines = [line for line in out.splitlines()
                 if "annapurna execute " in line and f"--device neuron:{core} --json" in line]
        assert len(lines) == 2, out  # round 1 (compiles) and round 2 (cache hit)
    assert "xm.xla_device()" in out and "xm.mark_step()" in out
    assert 'print("METRICS: " + json.dumps({"step": step, "loss": loss.item()})' in out
    assert "/var/cache/annapurna/neuron-compile-cache" in out


def test_smoke_program_is_valid_python():
    out = bash([SMOKE, "--dry-run"], env=clean_env()).stdout
    program = "\n".join(line.split("| ", 1)[1] if "| " in line else ""
                        for line in out.splitlines() if line.startswith("    |"))
    compile(program, "smoke_train.py", "exec")


FAKE_EXECUTE = r'''#!/usr/bin/env python3
"""Stands in for `annapurna execute PROGRAM --device neuron:N --json`: the first run of a
program "compiles" (adds a .neff to the cache) and is slow, later runs hit it."""
import hashlib, json, os, sys, time
args = sys.argv[1:]
assert args[0] == "execute" and args[2] == "--device" and args[4] == "--json", args
program, device = args[1], args[3]
cache = os.environ["ANNAPURNA_NEURON_COMPILE_CACHE"]
key = hashlib.sha256(open(program, "rb").read()).hexdigest()[:12]
module = os.path.join(cache, "neuronxcc-2.24.5133.0", f"MODULE_{key}_{device[-1]}")
neff = os.path.join(module, "model.neff")
hit = os.path.exists(neff) and not os.environ.get("FAKE_NO_CACHE")
if not hit:  # FAKE_NO_CACHE: every run compiles anew, into a new file
    os.makedirs(module, exist_ok=True)
    with open(neff if not os.path.exists(neff) else neff + f".{time.time_ns()}.neff", "w") as f:
        f.write("neff")
ran_on = os.environ.get("FAKE_RAN_ON", "neuron")
print("a line before the result")
print(json.dumps({"paper_id": "smoke", "success": True, "error": None, "device": device,
                  "neuron_cores": [int(device[-1])], "ran_on": ran_on,
                  "execution_time": 1.5 if hit else 42.0, "metrics": {"loss": 0.1}}, indent=2))
'''


def fake_app(tmp_path: Path) -> dict:
    app = tmp_path / "app"
    venv_bin = app / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "annapurna").write_text(FAKE_EXECUTE)
    (venv_bin / "annapurna").chmod(0o755)
    (venv_bin / "python").symlink_to(sys.executable)
    (tmp_path / "tmp").mkdir()
    return clean_env(ANNAPURNA_DIR=str(app), ANNAPURNA_NEURON_COMPILE_CACHE=str(tmp_path / "cache"),
                     TMPDIR=str(tmp_path / "tmp"))


def test_smoke_passes_when_both_cores_run_and_the_cache_is_hit(tmp_path):
    result = bash([SMOKE], env=fake_app(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"^[01] ", line)]
    assert rows == [["0", "42.0", "1.5", "neuron", "yes"], ["1", "42.0", "1.5", "neuron", "yes"]]
    assert "first round 2, second round 0" in result.stdout
    assert "smoke: OK" in result.stdout


def test_smoke_fails_when_a_run_is_not_on_a_neuroncore(tmp_path):
    env = fake_app(tmp_path)
    env["FAKE_RAN_ON"] = "cpu"
    result = bash([SMOKE], env=env)
    assert result.returncode != 0
    assert "ran on 'cpu', not a NeuronCore" in result.stderr


def test_smoke_fails_when_the_cache_is_not_hit(tmp_path):
    env = fake_app(tmp_path)
    env["FAKE_NO_CACHE"] = "1"
    result = bash([SMOKE], env=env)
    assert result.returncode != 0
    assert "did not hit the cache" in result.stderr
    assert "was not faster than the first" in result.stderr


def test_smoke_through_the_real_annapurna_execute_fails_here_for_the_right_reason(tmp_path, home):
    """The real command, not the stand-in: on this machine (no NeuronCore, no torch-xla) the
    smoke program cannot run on a NeuronCore, and smoke.sh must say so and exit non-zero."""
    app = tmp_path / "app"
    venv_bin = app / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "annapurna").symlink_to(Path(sys.executable).with_name("annapurna"))
    (venv_bin / "python").symlink_to(sys.executable)
    (tmp_path / "tmp").mkdir()
    env = clean_env(ANNAPURNA_DIR=str(app), ANNAPURNA_NEURON_COMPILE_CACHE=str(tmp_path / "cache"),
                    TMPDIR=str(tmp_path / "tmp"), ANNAPURNA_HOME=str(home))
    result = bash([SMOKE], env=env)
    assert result.returncode != 0, result.stdout
    for core in (0, 1):  # import torch_xla fails here: exit 1, and the probe saw the CPU
        assert f"neuron:{core}: r1-core{core}.json did not succeed: nonzero exit 1" in result.stderr, result.stderr
        assert f"neuron:{core}: r1-core{core}.json ran on 'cpu', not a NeuronCore" in result.stderr
