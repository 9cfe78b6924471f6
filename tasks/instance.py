"""The trn1 instance on demand: start, stop and look at it with boto3 EC2, waiting until it
is running or stopped, and doing nothing when it already is."""

from __future__ import annotations

from typing import Literal

import boto3
from botocore.exceptions import ClientError, NoCredentialsError, WaiterError
from pydantic import BaseModel

from blocks.errors import ConfigError
from blocks.settings import Settings

Action = Literal["start", "stop", "status"]
WAIT = {"Delay": 5, "MaxAttempts": 120}


class InstanceState(BaseModel):
    instance_id: str
    state: str
    instance_type: str | None = None
    changed: bool = False


def ec2_client(s: Settings):
    return boto3.client("ec2", region_name=s.aws_region or "us-east-1", endpoint_url=s.ec2_endpoint_url)


def _describe(ec2, instance_id: str) -> dict:
    try:
        found = ec2.describe_instances(InstanceIds=[instance_id])
    except NoCredentialsError:
        raise ConfigError("AWS credentials are missing: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          "a profile, or an instance role") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code.startswith("InvalidInstanceID"):
            raise ConfigError(f"instance {instance_id} does not exist in this region; check ANNAPURNA_TRN1_INSTANCE_ID "
                              "and ANNAPURNA_AWS_REGION") from None
        raise
    return found["Reservations"][0]["Instances"][0]


def instance_action(s: Settings, action: Action, wait: dict | None = None) -> InstanceState:
    """Do `action` and wait for its end state; a no-op when the instance is already there."""
    if not s.trn1_instance_id:
        raise ConfigError("ANNAPURNA_TRN1_INSTANCE_ID is not set: which instance is the trn1 worker?")
    ec2, iid, wait = ec2_client(s), s.trn1_instance_id, wait or WAIT
    info = _describe(ec2, iid)
    state, changed = info["State"]["Name"], False
    try:
        if action == "start" and state != "running":
            if state == "stopping":
                ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=wait)
            if state != "pending":
                ec2.start_instances(InstanceIds=[iid])
                changed = True
            ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=wait)
        elif action == "stop" and state not in ("stopped", "terminated"):
            if state != "stopping":
                ec2.stop_instances(InstanceIds=[iid])
                changed = True
            ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=wait)
    except WaiterError as e:
        raise ConfigError(f"instance {iid} did not reach its state in time ({e})") from None
    info = _describe(ec2, iid)
    return InstanceState(instance_id=iid, state=info["State"]["Name"], instance_type=info.get("InstanceType"),
                         changed=changed)
