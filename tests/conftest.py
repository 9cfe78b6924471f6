"""Shared test fixtures: real SQLite files, a real Prefect server (test harness), and a
local moto server speaking the S3 API over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Before Prefect is imported anywhere: a private Prefect home, no telemetry, and no
# settings leaking in from the developer's shell.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="annapurna-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = "annapurna"  # as prefect.yaml sets it for the workers
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"  # a source used outside a flow logs locally only
for name in list(os.environ):
    if name.startswith("ANNAPURNA_") or name in {"PREFECT_API_URL", "PREFECT_API_KEY"}:
        del os.environ[name]

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh ANNAPURNA_HOME, and a working directory with no .env in it."""
    path = tmp_path / "home"
    monkeypatch.setenv("ANNAPURNA_HOME", str(path))
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server on a temporary SQLite database, for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def moto_server():
    """A moto server in its own process, speaking S3 over HTTP on localhost."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    try:
        wait_for_http(url + "/moto-api/")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shared_fixture(relative: str) -> Path:
    """A recorded response from ../shared/fixtures, or a skip saying why there is none."""
    path = SHARED / "fixtures" / relative
    if not path.exists():
        reason = f"{path} is absent: the recorded responses live in ../shared beside the checkout"
        print(reason)
        pytest.skip(reason)
    return path
