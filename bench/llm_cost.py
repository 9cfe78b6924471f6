"""Model calls and dollars per 100 papers for the whole chain (judge, generate, execute,
repair) on the demo corpus with the replay model, whose recorded answers carry the token
counts the real model reported. Three runs in one: pre-filter on, pre-filter off, and a
re-run over the same papers (a crash and a restart), which must cost nothing.

    .venv/bin/python bench/llm_cost.py
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="annapurna-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from blocks.paper import Paper  # noqa: E402
from blocks.settings import filesystem, load_settings, paper_index  # noqa: E402
from deployments.demo_corpus import DEMO_PAPERS, make_pdf  # noqa: E402
from tasks.llm import Usage  # noqa: E402
from tasks.persist import persist_scraped  # noqa: E402

SEED_DOLLARS_PER_100 = 4.46


def seed() -> list[str]:
    s = load_settings()
    index, raw = paper_index(s), filesystem("raw", s)
    ids = []
    for d in DEMO_PAPERS:
        paper = Paper(id=f"openreview:{d.forum}", source="openreview", venue="ICLR", year=2025, title=d.title,
                      authors=d.authors, abstract=d.abstract)
        ids.append(persist_scraped(paper, make_pdf(d), raw, index).id)
    return ids


def chain(ids: list[str]) -> tuple[Usage, int, int]:
    from flows.execute_batch import execute_batch
    from flows.process_papers import process_papers, repair_papers

    first = asyncio.run(process_papers(paper_ids=ids)).stages
    usage, cached, saved = first.usage, first.cached_calls, first.prefiltered_out
    runnable = [i for i in ids if paper_index().get(i).status == "generated"]
    asyncio.run(execute_batch(runnable, timeout_s=300))
    fixed = repair_papers(ids)
    usage, cached = usage + fixed.usage, cached + fixed.cached_calls
    again = [i for i in ids if paper_index().get(i).status == "generated"]
    if again:
        asyncio.run(execute_batch(again, timeout_s=300))
    return usage, cached, saved


def run(label: str, home: str, **env: str) -> dict:
    os.environ["ANNAPURNA_HOME"] = home
    os.environ.pop("ANNAPURNA_SQLITE_PATH", None)
    for k, v in env.items():
        os.environ[k] = v
    ids = seed()
    usage, cached, saved = chain(ids)
    for k in env:
        os.environ.pop(k)
    return {"label": label, "papers": len(ids), "usage": usage, "cached": cached, "saved": saved,
            "executed": sum(paper_index().get(i).status == "executed" for i in ids)}


def main() -> None:
    s = load_settings()
    base = tempfile.mkdtemp(prefix="annapurna-bench-")
    rows = [run("pre-filter on", f"{base}/on")]
    rows.append(run("pre-filter off", f"{base}/off", ANNAPURNA_PREFILTER_THRESHOLD="0"))
    # the same storage (and model-call cache), a fresh index: a crash and a re-run
    rows.append(run("re-run (pre-filter on)", f"{base}/on", ANNAPURNA_SQLITE_PATH=f"{base}/on/rerun.sqlite3"))
    print(f"machine: {platform.machine()} {platform.system()}, Python {platform.python_version()}; replay model; "
          f"prices ${s.llm_price_in_per_m}/${s.llm_price_out_per_m} per 1M input/output tokens (Claude 3.5 Haiku on Bedrock)")
    print(f"{'run':24} {'papers':>6} {'executed':>8} {'saved':>5} {'calls':>5} {'cached':>6} {'in tok':>7} {'out tok':>7} "
          f"{'$':>8} {'$/100 papers':>12}")
    for r in rows:
        u = r["usage"]
        print(f"{r['label']:24} {r['papers']:>6} {r['executed']:>8} {r['saved']:>5} {u.calls:>5} {r['cached']:>6} "
              f"{u.input_tokens:>7} {u.output_tokens:>7} {u.dollars:>8.4f} {u.dollars / r['papers'] * 100:>12.3f}")
    on = rows[0]["usage"].dollars / rows[0]["papers"] * 100
    print(f"full chain: ${on:.3f} per 100 papers against the seed's ${SEED_DOLLARS_PER_100:.2f} "
          f"({SEED_DOLLARS_PER_100 / on:.0f}x less); the re-run cost ${rows[2]['usage'].dollars:.4f}")


if __name__ == "__main__":
    main()
