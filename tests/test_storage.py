"""Write-once storage through Prefect's own filesystem blocks: LocalFileSystem, and
prefect-aws S3Bucket against a local moto server over HTTP."""

from __future__ import annotations

import boto3
import pytest

from blocks.errors import ImmutableObjectError
from blocks.settings import STORE_KINDS, filesystem, load_settings
from tasks.storage import code_key, put_once, raw_pdf_key, raw_text_key, read_object, result_key, sha256


@pytest.fixture
def local_settings(home):
    return load_settings()


@pytest.fixture
def s3_settings(home, monkeypatch, moto_server):
    monkeypatch.setenv("ANNAPURNA_STORAGE", "s3")
    monkeypatch.setenv("ANNAPURNA_S3_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("ANNAPURNA_AWS_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for kind in STORE_KINDS:
        bucket = f"test-{kind}-{home.parent.name}".lower().replace("_", "-")[:63]
        monkeypatch.setenv(f"ANNAPURNA_{kind.upper()}_BUCKET", bucket)
        s3.create_bucket(Bucket=bucket)
    return load_settings()


@pytest.fixture(params=["local", "s3"])
def settings(request):
    return request.getfixturevalue(f"{request.param}_settings")


def test_keys_follow_the_documented_layout():
    assert raw_pdf_key("arxiv:2401.12345") == "arxiv/2401.12345/paper.pdf"
    assert raw_text_key("pmlr:v235/abe24a") == "pmlr/v235/abe24a/paper.txt"
    assert code_key("openreview:AbC1", 2) == "openreview/AbC1/v2/program.py"
    assert result_key("arxiv:1", 1, "stdout.txt") == "arxiv/1/v1/stdout.txt"


def test_write_once_read_back_and_never_overwrite(settings):
    fs = filesystem("raw", settings)
    key = raw_pdf_key("arxiv:2401.12345")
    assert read_object(fs, key) is None
    data = b"%PDF-1.7 original bytes"
    assert put_once(fs, key, data) == sha256(data)
    assert read_object(fs, key) == data
    assert put_once(fs, key, data) == sha256(data)  # the same bytes again: a no-op
    with pytest.raises(ImmutableObjectError, match="never overwritten"):
        put_once(fs, key, b"%PDF-1.7 different bytes")
    assert read_object(fs, key) == data


def test_the_three_stores_are_separate(settings):
    stores = {kind: filesystem(kind, settings) for kind in STORE_KINDS}
    for kind, fs in stores.items():
        put_once(fs, "arxiv/1/v1/thing", kind.encode())
    assert [read_object(fs, "arxiv/1/v1/thing") for fs in stores.values()] == [b"raw", b"code", b"results"]


def test_s3_objects_land_in_the_configured_buckets(s3_settings, moto_server):
    settings = s3_settings
    put_once(filesystem("code", settings), code_key("arxiv:9", 1), b"print('hi')")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    body = s3.get_object(Bucket=settings.code_bucket, Key="arxiv/9/v1/program.py")["Body"].read()
    assert body == b"print('hi')"


def test_local_storage_lives_under_annapurna_home(local_settings, home):
    put_once(filesystem("raw", local_settings), raw_pdf_key("arxiv:7"), b"%PDF")
    assert (home / "storage" / "raw" / "arxiv" / "7" / "paper.pdf").read_bytes() == b"%PDF"
