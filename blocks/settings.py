"""The one place configuration is resolved: `ANNAPURNA_*` environment variables, a `.env`
file, or saved Prefect blocks named by those variables, falling back to the embedded
defaults (SQLite index and local storage under ANNAPURNA_HOME).

Unknown or invalid settings fail here, at start-up, with the setting's name."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Literal

from prefect.filesystems import LocalFileSystem, WritableFileSystem
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from blocks.errors import ConfigError
from blocks.index import PaperIndex

PREFIX = "ANNAPURNA_"
StoreKind = Literal["raw", "code", "results", "cache"]
STORE_KINDS: tuple[StoreKind, ...] = ("raw", "code", "results")


class Settings(BaseSettings):
    """Every `ANNAPURNA_*` setting. The README's configuration table lists the same."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    home: Path = Path("~/.annapurna")
    index: Literal["sqlite", "opensearch"] = "sqlite"
    index_block: str | None = None
    sqlite_path: Path | None = None
    opensearch_url: str | None = None
    opensearch_index: str = "research-papers-v2"
    opensearch_user: str | None = None
    opensearch_password: SecretStr | None = None
    storage: Literal["local", "s3"] = "local"
    raw_bucket: str = "annapurna-raw-papers"
    code_bucket: str = "annapurna-code"
    results_bucket: str = "annapurna-results"
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    raw_storage_block: str | None = None
    code_storage_block: str | None = None
    results_storage_block: str | None = None

    arxiv_url: str = "https://export.arxiv.org/api/query"
    openreview_url: str = "https://api2.openreview.net"
    openreview_v1_url: str = "https://api.openreview.net"
    openreview_web_url: str = "https://openreview.net"
    openreview_username: str | None = None
    openreview_password: SecretStr | None = None
    openreview_password_secret: str | None = None
    pmlr_url: str = "https://proceedings.mlr.press"
    neurips_url: str = "https://proceedings.neurips.cc"
    mlsys_url: str = "https://proceedings.mlsys.org"
    max_pdf_mb: int = Field(50, ge=1)
    download_concurrency: int = Field(4, ge=1, le=64)

    execution_timeout_s: float = Field(600, gt=0)
    execution_memory_mb: int | None = Field(None, gt=0)
    execution_output_mb: int = Field(4, ge=1)
    cpu_slots: int = Field(2, ge=1)
    worker_python: str | None = None
    work_root: Path | None = None
    neuron_compile_cache: str = "~/.cache/annapurna/neuron-compile-cache"
    data_dir: Path | None = None
    isolation: Literal["auto", "bwrap", "unshare", "process-group"] = "auto"
    min_isolation: Literal["bwrap", "unshare", "process-group"] | None = None
    checkout: Path | None = Field(None, description="the checkout flow runs start in (prefect.yaml's pull step)")
    neuron_tool_paths: str = "/opt/aws/neuron/bin"
    worker_pass_env: str = ""
    preflight_python: str | None = Field(None, description="interpreter with torch-xla for the CPU preflight")
    preflight_timeout_s: float = Field(180, gt=0)
    preflight_max_compilations: int = Field(30, ge=1)
    preflight_first_sync_s: float = Field(45, gt=0)
    preflight_max_transfers_per_step: float = Field(2.0, ge=0)
    verdict_min_loss_points: int = Field(5, ge=2)
    verdict_min_loss_drop: float = Field(0.05, ge=0, lt=1)
    verdict_divergence_factor: float = Field(2.0, gt=1)
    cloudwatch: bool = False
    cloudwatch_endpoint_url: str | None = None
    instance_type: str = "trn1.2xlarge"

    llm: Literal["replay", "bedrock"] = "replay"
    llm_model: str = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    llm_replay_dir: Path = Path(__file__).resolve().parents[1] / "deployments" / "llm_replay"
    llm_replay_log: Path | None = Field(None, description="append every replayed call's key here (audits, tests)")
    llm_temperature: float = Field(0.2, ge=0, le=1)
    llm_max_tokens: int = Field(4096, ge=256)
    llm_price_in_per_m: float = Field(0.80, ge=0, description="dollars per 1M input tokens")
    llm_price_out_per_m: float = Field(4.00, ge=0, description="dollars per 1M output tokens")
    llm_concurrency: int = Field(4, ge=1)
    interests: str = (
        "efficient training of neural networks; transformers and attention; optimizers and "
        "normalisation; parameter-efficient fine-tuning; small models that train on one accelerator"
    )
    interest_keywords: str = "transformer,attention,optimizer,normalization,normalisation,adapter,lora,training,fine-tuning,pretraining"
    prefilter_threshold: float = Field(0.08, ge=0, le=1)
    duplicate_threshold: float = Field(0.9, ge=0, le=1)
    repair_attempts: int = Field(2, ge=0, le=5)
    trn1_price_per_hour: float = Field(1.34, ge=0)
    trn1_instance_id: str | None = None
    ec2_endpoint_url: str | None = None
    idle_stop_minutes: int = Field(30, ge=1)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def sqlite_file(self) -> Path:
        return (self.sqlite_path or self.home_dir / "index.sqlite3").expanduser()


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


def _unknown_names(env_file: Path | None) -> list[str]:
    names = [k for k in os.environ if k.startswith(PREFIX)]
    if env_file and env_file.is_file():
        from dotenv import dotenv_values

        names += [k for k in dotenv_values(env_file) if k.upper().startswith(PREFIX)]
    known = {_env_name(f) for f in Settings.model_fields}
    return sorted({n for n in names if n.upper() not in known})


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Resolve and check every setting; raise ConfigError naming the first bad one."""
    env_path = Path(env_file) if env_file else None
    unknown = _unknown_names(env_path)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]}; known settings: "
            + ", ".join(_env_name(f) for f in Settings.model_fields)
        )
    try:
        settings = Settings(_env_file=env_path)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(
            f"setting {_env_name(str(err['loc'][0]))} is invalid: {err['msg']} (got {err.get('input')!r})"
        ) from None
    if settings.index == "opensearch" and not (settings.opensearch_url or settings.index_block):
        raise ConfigError("ANNAPURNA_INDEX=opensearch needs ANNAPURNA_OPENSEARCH_URL (or ANNAPURNA_INDEX_BLOCK)")
    _check_writable(settings.home_dir, "ANNAPURNA_HOME")
    return settings


def _check_writable(directory: Path, setting: str) -> None:
    probe = directory / f".write-probe-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{setting}={directory} is not a writable directory ({e.strerror or e})") from None


def _load_block(name: str, setting: str, expected: type):
    """A saved block by 'block-type-slug/name', checked to be of the expected kind."""
    from prefect.blocks.core import Block

    if "/" not in name:
        raise ConfigError(f"{setting}={name!r} must be 'block-type-slug/block-name', e.g. 's3-bucket/raw-papers'")
    try:
        block = Block.load(name, _sync=True)
    except Exception as e:
        raise ConfigError(f"{setting}={name!r}: cannot load that saved block ({e})") from None
    if not isinstance(block, expected):
        raise ConfigError(f"{setting}={name!r} is a {type(block).__name__}, not a {expected.__name__}")
    return block


def paper_index(settings: Settings | None = None) -> PaperIndex:
    """The configured paper index block."""
    from blocks.opensearch_index import OpenSearchPaperIndex
    from blocks.sqlite_index import SQLitePaperIndex

    s = settings or load_settings()
    if s.index_block:
        return _load_block(s.index_block, "ANNAPURNA_INDEX_BLOCK", PaperIndex)
    if s.index == "opensearch":
        return OpenSearchPaperIndex(
            url=s.opensearch_url, index_name=s.opensearch_index,
            username=s.opensearch_user, password=s.opensearch_password,
        )
    return SQLitePaperIndex(path=str(s.sqlite_file))


def filesystem(kind: StoreKind, settings: Settings | None = None) -> WritableFileSystem:
    """The filesystem block holding one kind of object: raw papers, code, results, or the
    cache of paid model calls (kept with the results, under llm-cache/)."""
    s = settings or load_settings()
    folder = ""
    if kind == "cache":
        kind, folder = "results", "llm-cache"
    saved = getattr(s, f"{kind}_storage_block")
    if saved:
        return _load_block(saved, _env_name(f"{kind}_storage_block"), WritableFileSystem)
    if s.storage == "s3":
        from prefect_aws import AwsCredentials, S3Bucket
        from prefect_aws.client_parameters import AwsClientParameters

        return S3Bucket(
            bucket_name=getattr(s, f"{kind}_bucket"),
            bucket_folder=folder,
            credentials=AwsCredentials(
                region_name=s.aws_region,
                aws_client_parameters=AwsClientParameters(endpoint_url=s.s3_endpoint_url),
            ),
        )
    return LocalFileSystem(basepath=str(s.home_dir / "storage" / (folder or kind)))


def openreview_password(settings: Settings) -> str | None:
    """The OpenReview password: from a saved Prefect Secret block if one is named, else env."""
    if settings.openreview_password_secret:
        from prefect.blocks.system import Secret

        secret = _load_block(f"secret/{settings.openreview_password_secret}",
                             "ANNAPURNA_OPENREVIEW_PASSWORD_SECRET", Secret)
        return secret.get()
    return settings.openreview_password.get_secret_value() if settings.openreview_password else None


def cache_storage_slug(settings: Settings | None = None) -> str:
    """The cache of paid model calls as a saved block, which Prefect requires for a task's
    result storage: saved once under a name derived from where it points."""
    import hashlib

    s = settings or load_settings()
    if s.results_storage_block:
        return s.results_storage_block
    fs = filesystem("cache", s)
    where = getattr(fs, "basepath", None) or f"{getattr(fs, 'bucket_name', '')}/{getattr(fs, 'bucket_folder', '')}"
    name = "annapurna-llm-cache-" + hashlib.sha256(str(where).encode()).hexdigest()[:10]
    slug = f"{fs.get_block_type_slug()}/{name}"
    try:
        fs.save(name, overwrite=True, _sync=True)
    except Exception as e:
        raise ConfigError(f"cannot save the model-call cache storage block {slug} ({e}); is the Prefect API reachable?") from None
    return slug
