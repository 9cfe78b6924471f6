"""The nightly arXiv run is scheduled by a real Prefect server: `prefect server start` from
this project's own pins (its scheduler services on, at their default settings), `prefect
deploy --name nightly`, and scheduled runs of `scrape-arxiv/nightly` appear at 02:30 UTC with
no error in the server's log. With SQLAlchemy 2.1 the scheduler failed every loop and none
ever appeared."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from datetime import datetime, timezone

from conftest import REPO, free_port, wait_for_http
from test_deployments import BIN, prefect


def test_nightly_deployment_gets_scheduled_runs_on_a_real_server(tmp_path):
    from prefect.client.orchestration import PrefectClient

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"{api}/health", timeout=120)
        prefect("work-pool", "create", "default", "--type", "process", env=env)
        prefect("--no-prompt", "deploy", "--name", "nightly", env=env)

        async def scheduled():
            async with PrefectClient(api) as client:
                deployment = await client.read_deployment_by_name("scrape-arxiv/nightly")
                runs = await client.read_flow_runs()
                return deployment, [r for r in runs if r.deployment_id == deployment.id]

        deadline = time.monotonic() + 90
        while True:
            deployment, runs = asyncio.run(scheduled())
            if runs or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        server.terminate()
        server.wait(30)
    text = log.read_text()
    assert not re.search(r"\bERROR\b|Traceback|InvalidRequestError", text), text[-4000:]
    assert deployment.schedules and deployment.schedules[0].active
    assert runs, f"no scheduled run of scrape-arxiv/nightly in 90 s; server log:\n{text[-4000:]}"
    now = datetime.now(timezone.utc)
    for run in runs:
        assert run.state.is_scheduled(), run.state
        start = run.expected_start_time.astimezone(timezone.utc)
        assert (start.hour, start.minute) == (2, 30) and start > now, start
        assert run.parameters.get("max_papers") == 500
