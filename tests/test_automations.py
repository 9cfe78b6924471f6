"""The instance-on-demand automations on a real Prefect server with a moto EC2 server:
a Late run in the trainium pool starts the instance; idleness stops it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from conftest import REPO

BIN = Path(sys.executable).parent


def instance_state(ec2, iid) -> str:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_late_run_starts_the_instance_and_idleness_stops_it(home, prefect_server, moto_server, monkeypatch):
    from prefect import get_client
    from prefect.states import Late

    from deployments.automations import START, STOP, apply

    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, InstanceType="trn1.2xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[iid])
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ANNAPURNA_HOME": str(home), "ANNAPURNA_TRN1_INSTANCE_ID": iid,
           "ANNAPURNA_EC2_ENDPOINT_URL": moto_server, "ANNAPURNA_AWS_REGION": "us-east-1", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    run = lambda *cmd: subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    for cmd in ([sys.executable, "-m", "deployments.pools"], [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"]):
        out = run(*cmd)
        assert out.returncode == 0, out.stdout + out.stderr
    created = asyncio.run(apply(idle=timedelta(seconds=20)))
    assert {a.name for a in created} == {START, STOP}

    async def late_run():
        async with get_client() as client:
            dep = await client.read_deployment_by_name("execute-batch/trainium")
            fr = await client.create_flow_run_from_deployment(dep.id, parameters={"paper_ids": []})
            await client.set_flow_run_state(fr.id, Late(), force=True)
            return fr.id

    asyncio.run(late_run())
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "default"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while instance_state(ec2, iid) != "running" and time.monotonic() < deadline:
            time.sleep(1)
        assert instance_state(ec2, iid) == "running", "the Late run did not start the instance"
        deadline = time.monotonic() + 120
        while instance_state(ec2, iid) != "stopped" and time.monotonic() < deadline:
            time.sleep(1)
        assert instance_state(ec2, iid) == "stopped", "idleness did not stop the instance"
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        asyncio.run(forget_automations())


async def forget_automations() -> None:
    """Leave the shared test server as it was: no automation firing, no run left waiting."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        for automation in await client.read_automations():
            await client.delete_automation(automation.id)
        waiting = await client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))))
        for run in waiting:
            await client.delete_flow_run(run.id)
