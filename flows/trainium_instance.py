"""`trainium-instance`: start, stop or look at the trn1 worker's instance. The automations
in deployments/automations.py run it: start when runs wait in the `trainium` pool, stop
after an idle period."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from blocks.settings import load_settings
from tasks.instance import Action, InstanceState, instance_action


@task(name="instance-action", retries=2, retry_delay_seconds=[10, 30])
def instance_task(action: Action) -> InstanceState:
    return instance_action(load_settings(), action)


@flow(name="trainium-instance", log_prints=True)
def trainium_instance(action: Action = "status") -> InstanceState:
    state = instance_task(action)
    get_run_logger().info("%s %s: %s%s", action, state.instance_id, state.state, " (changed)" if state.changed else "")
    return state
