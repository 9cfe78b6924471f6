"""`execute-batch`: run the latest program of each paper on this machine's devices (one
NeuronCore per job on trn1) and record the results. It takes paper ids, never code.
`execute-batch/trainium` runs on the `trainium` work pool, i.e. on the trn1 machine."""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.errors import UnknownPaperError
from blocks.settings import filesystem, load_settings, paper_index
from tasks.execute import (
    failed_before_running,
    limits,
    mark_started,
    prepare_job,
    publish_cloudwatch,
    queue,
    ran_before_without_success,
    record_result,
    sync_compile_cache,
    worker_config,
)
from trainium_worker import ExecutionResult
from trainium_worker.devices import discover
from trainium_worker.job import Job
from trainium_worker.runner import Runner
from trainium_worker.sandbox import report as isolation_report


@task(name="prepare-jobs", retries=2, cache_policy=NO_CACHE, persist_result=False)
def prepare_jobs(paper_ids: list[str], timeout_s: float | None, profile: bool,
                 allow_network: bool) -> tuple[list[Job], list[ExecutionResult]]:
    """Jobs for the papers whose code is in storage; a failure result for the others."""
    s = load_settings()
    index, code_fs = paper_index(s), filesystem("code", s)
    jobs, failed = [], []
    for pid in paper_ids:
        try:
            paper = queue(index, pid)
        except UnknownPaperError as e:
            get_run_logger().warning("skipped: %s", e)
            continue
        try:
            job = prepare_job(paper, code_fs, limits(s, timeout_s), profile=profile, allow_network=allow_network,
                              retry_compilation=ran_before_without_success(paper))
            mark_started(index, pid, job.version)
            jobs.append(job)
        except ValueError as e:
            version = paper.code_versions[-1].version if paper.code_versions else 1
            failed.append(failed_before_running(pid, version, str(e)))
    return jobs, failed


@task(name="record-results", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE, persist_result=False)
def record_results(results: list[tuple[ExecutionResult, dict[str, bytes]]]) -> None:
    s = load_settings()
    index, results_fs = paper_index(s), filesystem("results", s)
    for result, files in results:
        if result.code_version and index.get(result.paper_id):
            record_result(index, results_fs, result, files)


@flow(name="execute-batch", log_prints=True)
async def execute_batch(paper_ids: list[str], timeout_s: float | None = None, profile: bool = False,
                        allow_network: bool = False) -> list[ExecutionResult]:
    """Run each paper's latest program, as many at once as there are devices."""
    log = get_run_logger()
    s = load_settings()
    config = worker_config(s)
    runner = Runner(discover(config), config)  # below ANNAPURNA_MIN_ISOLATION: fails here, nothing queued
    jobs, failed = prepare_jobs(paper_ids, timeout_s, profile, allow_network)
    log.info("%d jobs on %s; isolation %s: %s", len(jobs), ", ".join(d.label for d in runner.devices),
             runner.isolation, isolation_report(runner.isolation).note)
    s3_cache = s.neuron_compile_cache if s.neuron_compile_cache.startswith("s3://") and any(
        d.kind == "neuron" for d in runner.devices) else None
    if s3_cache:
        got = await asyncio.to_thread(sync_compile_cache, s3_cache, config.compile_cache, "down",
                                      s.s3_endpoint_url, s.aws_region)
        log.info("compile cache: %d files from %s into %s", got, s3_cache, config.compile_cache)
    try:
        ran = await runner.run_batch(jobs)
    finally:
        if s3_cache:
            sent = await asyncio.to_thread(sync_compile_cache, s3_cache, config.compile_cache, "up",
                                           s.s3_endpoint_url, s.aws_region)
            log.info("compile cache: %d files back to %s", sent, s3_cache)
    record_results(ran + [(r, {}) for r in failed])
    results = [r for r, _ in ran] + failed
    if s.cloudwatch:
        await asyncio.to_thread(publish_cloudwatch, results, s.instance_type, s.aws_region, s.cloudwatch_endpoint_url)
    await create_table_artifact(
        key="execute-batch",
        table=[{
            "paper": r.paper_id, "version": r.code_version, "verdict": r.verdict, "beats baseline": r.beats_baseline,
            "success": r.success,
            "seconds": r.execution_time, "peak MB": r.peak_memory_mb, "device": r.device, "ran on": r.ran_on or "?",
            "metrics": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(r.metrics.items())[:4]),
            "error": r.error or "",
        } for r in results],
        description=f"{sum(r.verdict == 'trained' for r in results)} of {len(results)} programs trained "
                    f"({sum(r.success for r in results)} ran to completion)",
    )
    return results
