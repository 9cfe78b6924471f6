"""The execution stage around the Trainium worker: turn paper ids into jobs (the code
comes from storage, never through flow parameters), and record each result: outputs to
the results store, a summary on the paper's code version, the paper's new status."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect.filesystems import WritableFileSystem

from blocks.index import PaperIndex
from blocks.paper import CodeArtifact, Paper, PaperStatus
from blocks.settings import Settings
from tasks.storage import put_once, read_object, result_key
from trainium_worker import ExecutionResult
from trainium_worker.job import Job, Limits, WorkerConfig
from trainium_worker.verdict import VerdictRules

#: Metrics copied onto the paper's code version (all of them stay in result.json).
SUMMARY_METRICS = 8


def worker_config(s: Settings) -> WorkerConfig:
    """The worker's configuration from settings. An s3:// compile cache is mirrored in a
    local directory (`sync_compile_cache`): programs only ever see that directory."""
    extra = {"python": s.worker_python} if s.worker_python else {}
    cache = str(s.home_dir / "neuron-compile-cache") if s.neuron_compile_cache.startswith("s3://") else s.neuron_compile_cache
    return WorkerConfig(
        work_root=s.work_root or s.home_dir / "jobs", cpu_slots=s.cpu_slots, compile_cache=cache,
        data_dir=s.data_dir, isolation=s.isolation, min_isolation=s.min_isolation,
        tool_paths=[p for p in s.neuron_tool_paths.split(":") if p],
        pass_env=[n.strip() for n in s.worker_pass_env.split(",") if n.strip()],
        verdict_rules=VerdictRules(min_loss_points=s.verdict_min_loss_points, min_loss_drop=s.verdict_min_loss_drop,
                                   divergence_factor=s.verdict_divergence_factor), **extra,
    )


def limits(s: Settings, timeout_s: float | None = None) -> Limits:
    return Limits(timeout_s=timeout_s or s.execution_timeout_s, memory_mb=s.execution_memory_mb,
                  output_bytes=s.execution_output_mb * 2**20)


def latest_code(paper: Paper) -> CodeArtifact | None:
    return paper.code_versions[-1] if paper.code_versions else None


def with_version(paper: Paper, version: int, **fields) -> list[CodeArtifact]:
    """The paper's code versions, with `fields` set on version `version`."""
    return [v.model_copy(update=fields) if v.version == version else v for v in paper.code_versions]


def preflight_state(report: dict | None) -> str:
    """skipped, passed or failed; '' when the version has not been preflighted."""
    if not report:
        return ""
    return "skipped" if "skipped" in report else "passed" if report.get("passed") else "failed"


STARTED = "execution_started"  # paper.extra: the code version a worker began to run


def ran_before_without_success(paper: Paper) -> bool:
    """An earlier run of this paper failed, or began and never reported (killed, timed out
    mid-compile, the worker lost): the Neuron compiler may hold a failed compilation of
    its graphs, which it would otherwise answer from its cache."""
    latest = latest_code(paper)
    never_reported = latest is not None and paper.extra.get(STARTED) == latest.version and latest.success is None
    return never_reported or any(c.status == PaperStatus.EXECUTION_FAILED for c in paper.history)


def mark_started(index: PaperIndex, paper_id: str, version: int) -> Paper:
    return index.update(paper_id, lambda p: p.model_copy(update={"extra": {**p.extra, STARTED: version}}))


def prepare_job(paper: Paper, code_fs: WritableFileSystem, job_limits: Limits, *,
                profile: bool = False, allow_network: bool = False, retry_compilation: bool = False) -> Job:
    """The job for a paper's latest code version. Raises ValueError when there is none."""
    artifact = latest_code(paper)
    if artifact is None:
        raise ValueError(f"paper {paper.id} has no generated code")
    code = read_object(code_fs, artifact.code_key)
    if code is None:
        raise ValueError(f"paper {paper.id}: code {artifact.code_key} is missing from storage")
    return Job(paper_id=paper.id, code=code.decode(), version=artifact.version, attempt=artifact.version,
               limits=job_limits, profile=profile, allow_network=allow_network, retry_compilation=retry_compilation,
               headline_metric=artifact.headline_metric,
               better=artifact.better if artifact.better in ("lower", "higher") else None)


def queue(index: PaperIndex, paper_id: str) -> Paper:
    """A generated (or failed, for a re-run) paper moves to queued; a queued one stays."""
    paper = index.require(paper_id)
    if paper.status in (PaperStatus.GENERATED, PaperStatus.EXECUTION_FAILED):
        paper = index.transition(paper_id, PaperStatus.QUEUED, "dispatched to execute-batch")
    return paper


def record_result(index: PaperIndex, results_fs: WritableFileSystem, result: ExecutionResult,
                  files: dict[str, bytes]) -> Paper:
    """Store the run's outputs and attach its summary to the paper. Each run gets its own
    folder (write-once storage), so re-running a version never overwrites an earlier run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = f"run-{stamp}"
    key = result_key(result.paper_id, result.code_version, f"{folder}/result.json")
    outputs = {"stdout.txt": result.stdout.encode(), "stderr.txt": result.stderr.encode(), **files}
    for name, data in outputs.items():
        put_once(results_fs, result_key(result.paper_id, result.code_version, f"{folder}/{name}"), data)
    put_once(results_fs, key, result.model_dump_json(indent=2).encode())
    summary = dict(list(result.metrics.items())[:SUMMARY_METRICS])

    def attach(paper: Paper) -> Paper:
        versions = with_version(paper, result.code_version, result_key=key, success=result.success, error=result.error,
                                metrics=summary, training=result.verdict, training_reason=result.verdict_reason,
                                beats_baseline=result.beats_baseline, ran_at=result.started_at)
        status = PaperStatus.EXECUTED if result.success else PaperStatus.EXECUTION_FAILED
        if paper.status != PaperStatus.QUEUED:
            paper = paper.advance(PaperStatus.QUEUED, "result arrived for an unqueued paper")
        return paper.advance(status, result.error, code_versions=versions, error=result.error)

    return index.update(result.paper_id, attach)


def failed_before_running(paper_id: str, version: int, reason: str) -> ExecutionResult:
    return ExecutionResult(paper_id=paper_id, code_version=version, success=False, error=reason)


def publish_cloudwatch(results: list[ExecutionResult], instance_type: str, region: str | None = None,
                       endpoint_url: str | None = None) -> int:
    """Numeric metrics of each run to CloudWatch, namespace Trainium/Training, dimensions
    PaperId and InstanceType. Returns how many data points were sent."""
    import boto3

    cw = boto3.client("cloudwatch", region_name=region or "us-east-1", endpoint_url=endpoint_url)
    sent = 0
    for r in results:
        dims = [{"Name": "PaperId", "Value": r.paper_id}, {"Name": "InstanceType", "Value": instance_type}]
        values = {"ExecutionTime": r.execution_time, "Success": float(r.success), "PeakMemoryMB": r.peak_memory_mb}
        values |= {k: float(v) for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        data = [{"MetricName": k, "Dimensions": dims, "Value": v} for k, v in values.items()]
        for i in range(0, len(data), 20):
            cw.put_metric_data(Namespace="Trainium/Training", MetricData=data[i : i + 20])
        sent += len(data)
    return sent


def sync_compile_cache(url: str, local: str, direction: str, endpoint_url: str | None = None,
                       region: str | None = None) -> int:
    """Mirror the Neuron compile cache between S3 and the local directory programs use,
    outside the sandbox (programs have no network and no credentials). `down` before a
    batch, `up` after it; only files missing or of another size on the other side are
    copied. Returns how many files were copied."""
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    remote = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        remote |= {o["Key"][len(prefix):]: o["Size"] for o in page.get("Contents", [])}
    root = Path(local).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    copied = 0
    if direction == "down":
        for rel, size in remote.items():
            target = root / rel
            if rel and not rel.endswith("/") and (not target.is_file() or target.stat().st_size != size):
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, prefix + rel, str(target))
                copied += 1
    else:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
            rel = path.relative_to(root).as_posix()
            if remote.get(rel) != path.stat().st_size:
                s3.upload_file(str(path), bucket, prefix + rel)
                copied += 1
    return copied


def preflight_limits(s: Settings):
    from trainium_worker.preflight import PreflightLimits

    return PreflightLimits(timeout_s=s.preflight_timeout_s, max_compilations=s.preflight_max_compilations,
                           first_sync_s=s.preflight_first_sync_s,
                           max_transfers_per_step=s.preflight_max_transfers_per_step)


def record_preflight(index: PaperIndex, results_fs: WritableFileSystem, paper: Paper, code_fs: WritableFileSystem,
                     s: Settings) -> bool:
    """Preflight the paper's latest program; True when it may go to the trn1. A failure is
    recorded like a run (results store, code version, `execution_failed` with the report as
    its error tail), so the repair loop rewrites it without any trn1 time."""
    import asyncio

    from trainium_worker.preflight import preflight

    artifact = latest_code(paper)
    if artifact is None:
        return False

    def keep(report: dict) -> None:
        index.update(paper.id, lambda p: p.model_copy(update={"code_versions": with_version(p, artifact.version,
                                                                                              preflight=report)}))

    if not s.preflight_python:
        keep({"skipped": "ANNAPURNA_PREFLIGHT_PYTHON is not set (`make preflight-env` builds it)"})
        return True
    code = (read_object(code_fs, artifact.code_key) or b"").decode()
    report, result = asyncio.run(preflight(code, s.preflight_python, worker_config(s), preflight_limits(s),
                                           paper.id, artifact.version))
    summary = report.model_dump(exclude={"lines"}) | {"lines": report.lines[:5]}
    key = result_key(paper.id, artifact.version, f"preflight-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}.json")
    put_once(results_fs, key, report.model_dump_json(indent=2).encode())
    keep(summary | {"report_key": key})
    if report.passed:
        return True
    queue(index, paper.id)
    record_result(index, results_fs, result, {})
    return False
