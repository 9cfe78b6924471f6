"""The trainium-instance flow against a local moto server speaking the EC2 API."""

from __future__ import annotations

import boto3
import pytest

from blocks.errors import ConfigError
from blocks.settings import load_settings
from tasks.instance import instance_action

FAST = {"Delay": 1, "MaxAttempts": 30}


@pytest.fixture
def instance(home, moto_server, monkeypatch):
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, InstanceType="trn1.2xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[iid])
    monkeypatch.setenv("ANNAPURNA_EC2_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("ANNAPURNA_AWS_REGION", "us-east-1")
    monkeypatch.setenv("ANNAPURNA_TRN1_INSTANCE_ID", iid)
    return ec2, iid


def test_start_stop_status_and_idempotence(instance):
    ec2, iid = instance
    s = load_settings()
    assert instance_action(s, "status", FAST).state == "stopped"
    started = instance_action(s, "start", FAST)
    assert started.state == "running" and started.changed and started.instance_type == "trn1.2xlarge"
    assert instance_action(s, "start", FAST).changed is False  # already running: nothing to do
    stopped = instance_action(s, "stop", FAST)
    assert stopped.state == "stopped" and stopped.changed
    assert instance_action(s, "stop", FAST).changed is False


def test_bad_instance_and_missing_settings_are_one_line_errors(instance, monkeypatch):
    monkeypatch.setenv("ANNAPURNA_TRN1_INSTANCE_ID", "i-0123456789abcdef0")
    with pytest.raises(ConfigError, match="instance i-0123456789abcdef0 does not exist.*ANNAPURNA_TRN1_INSTANCE_ID"):
        instance_action(load_settings(), "status", FAST)
    monkeypatch.delenv("ANNAPURNA_TRN1_INSTANCE_ID")
    with pytest.raises(ConfigError, match="ANNAPURNA_TRN1_INSTANCE_ID is not set"):
        instance_action(load_settings(), "start", FAST)


def test_the_flow_on_a_prefect_server(instance, prefect_server):
    from flows.trainium_instance import trainium_instance

    ec2, iid = instance
    assert trainium_instance("start").state == "running"
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert trainium_instance("stop").state == "stopped"
