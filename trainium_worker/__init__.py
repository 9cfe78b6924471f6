"""The executor that runs on the trn1 machine. Prefect-free and free of the rest of
Annapurna, so it installs there without the scraping or LLM dependencies."""

from trainium_worker.result import ExecutionResult

__all__ = ["ExecutionResult"]
