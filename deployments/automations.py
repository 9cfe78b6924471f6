"""The trn1 instance on demand, as Prefect automations kept as code:

- `trainium: start on demand` — when a flow run in the `trainium` pool turns Late or
  Pending, run `trainium-instance/start` (idempotent when it is already running);
- `trainium: stop when idle` — when no flow run in the `trainium` pool has started, ended
  or been scheduled for ANNAPURNA_IDLE_STOP_MINUTES, run `trainium-instance/stop`.

Applied (created or replaced, by name) with one command, after `prefect deploy --all`:

    python -m deployments.automations
"""

from __future__ import annotations

from datetime import timedelta

from prefect import get_client
from prefect.automations import Automation
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import EventTrigger, Posture

from blocks.settings import load_settings

POOL = "trainium"
START, STOP = "trainium: start on demand", "trainium: stop when idle"
ACTIVITY = {"prefect.flow-run.Scheduled", "prefect.flow-run.Pending", "prefect.flow-run.Late",
            "prefect.flow-run.Running", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
            "prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"}
IN_POOL = {"prefect.resource.role": "work-pool", "prefect.resource.name": POOL}


def automations(start_deployment, stop_deployment, idle: timedelta) -> list[Automation]:
    return [
        Automation(
            name=START,
            description="Start the trn1 instance when execution runs wait for it.",
            trigger=EventTrigger(match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=IN_POOL,
                                 expect={"prefect.flow-run.Late", "prefect.flow-run.Pending"},
                                 posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            actions=[RunDeployment(source="selected", deployment_id=start_deployment, parameters={"action": "start"})],
        ),
        Automation(
            name=STOP,
            description=f"Stop the trn1 instance after {idle} with no run in the trainium pool.",
            trigger=EventTrigger(match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=IN_POOL,
                                 expect=ACTIVITY, posture=Posture.Proactive, threshold=1, within=idle),
            actions=[RunDeployment(source="selected", deployment_id=stop_deployment, parameters={"action": "stop"})],
        ),
    ]


async def apply(idle: timedelta | None = None) -> list[Automation]:
    """Create both automations, replacing any of the same name."""
    s = load_settings()
    async with get_client() as client:
        start = await client.read_deployment_by_name("trainium-instance/start")
        stop = await client.read_deployment_by_name("trainium-instance/stop")
        for existing in await client.read_automations():
            if existing.name in (START, STOP):
                await client.delete_automation(existing.id)
    created = []
    for automation in automations(start.id, stop.id, idle or timedelta(minutes=s.idle_stop_minutes)):
        created.append(await automation.acreate())
    return created


if __name__ == "__main__":
    import asyncio

    for a in asyncio.run(apply()):
        print(f"automation {a.name!r}: {a.id}")
