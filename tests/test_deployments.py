"""prefect.yaml against a real Prefect server: `prefect --no-prompt deploy --all`, then
`prefect deployment run scrape-conference/iclr` picked up by a real process worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from test_scrape_flows import PASSWORD, USER, conference_server

from blocks.settings import paper_index
from deployments.replay import BackgroundReplay

BIN = Path(sys.executable).parent


def prefect(*args: str, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def test_deploy_all_then_run_scrape_conference_iclr_on_a_worker(home, prefect_server):
    from prefect import get_client

    server = conference_server()
    with BackgroundReplay(server) as url:
        env = {
            **os.environ, "PREFECT_API_URL": prefect_server, "ANNAPURNA_HOME": str(home),
            "ANNAPURNA_OPENREVIEW_URL": f"{url}/or2", "ANNAPURNA_OPENREVIEW_V1_URL": f"{url}/or1",
            "ANNAPURNA_OPENREVIEW_WEB_URL": url, "ANNAPURNA_OPENREVIEW_USERNAME": USER,
            "ANNAPURNA_OPENREVIEW_PASSWORD": PASSWORD, "COLUMNS": "200",
        }
        subprocess.run([sys.executable, "-m", "deployments.pools"], cwd=REPO, env=env, check=True, timeout=120)
        prefect("--no-prompt", "deploy", "--all", env=env)
        listed = prefect("deployment", "ls", env=env).stdout
        for name in ("scrape-conference/iclr", "scrape-conference/icml", "scrape-conference/neurips",
                     "scrape-conference/mlsys", "scrape-arxiv/nightly"):
            assert name in listed, listed
        prefect("deployment", "run", "scrape-conference/iclr", "--param", "batch_size=4", "--param", "until=scrape", env=env)
        prefect("worker", "start", "--pool", "default", "--run-once", env=env, timeout=300)

    async def runs():
        async with get_client() as client:
            nightly = await client.read_deployment_by_name("scrape-arxiv/nightly")
            return await client.read_flow_runs(), nightly

    flow_runs, nightly = asyncio.run(runs())
    iclr = [r for r in flow_runs if r.name and r.parameters.get("venue") == "ICLR" and r.parameters.get("batch_size") == 4]
    assert iclr and iclr[0].state.is_completed(), [(r.name, r.state) for r in flow_runs]
    assert nightly.schedules and nightly.schedules[0].schedule.cron == "30 2 * * *"
    assert sum(paper_index().counts().values()) == 10
