"""The work pools, as code: `default` for scraping, judging and generation, and
`trainium` for execution, with a pool concurrency of 1 so two batches never compete for
the NeuronCores (a batch already runs one job per core).

    python -m deployments.pools      # idempotent
"""

from __future__ import annotations

import asyncio

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists

POOLS = {"default": None, "trainium": 1}  # name -> concurrency limit


async def ensure_pools() -> None:
    async with get_client() as client:
        for name, limit in POOLS.items():
            try:
                await client.create_work_pool(WorkPoolCreate(name=name, type="process", concurrency_limit=limit))
            except ObjectAlreadyExists:
                await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))


if __name__ == "__main__":
    asyncio.run(ensure_pools())
    print("work pools:", ", ".join(f"{n} (concurrency {c or 'unlimited'})" for n, c in POOLS.items()))
