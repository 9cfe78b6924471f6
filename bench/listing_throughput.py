"""Listing throughput: a 4,000-paper OpenReview venue served by the local replay server
(in its own process) with 100 ms injected latency per request; our OpenReviewSource
against openreview-py's `get_all_notes` on the same server, in the same run.

Two ways each: cold (a new client, so the login is part of the time) and warm (a
logged-in client listing again, as a long-running worker does). The server advertises and
enforces OpenReview's rate limit; we report every request and any refusal (429).

    .venv/bin/python bench/listing_throughput.py [--papers 4000] [--latency 0.1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import platform
import statistics
import time
import urllib.request

from deployments.replay import BackgroundReplay, RateWindow, ReplayServer, v2_note
from tasks.sources.http import new_session
from tasks.sources.openreview import OpenReviewSource

USER, PASSWORD, VENUE = "annapurna@example.org", "demo-password", "ICLR.cc/2025/Conference"


def notes(n: int) -> list[dict]:
    return [v2_note(f"B{i:09d}", i, VENUE, "ICLR 2025 Poster", f"Benchmark paper {i}",
                    "An abstract of typical length. " * 12, ["First Author", "Second Author", "Third Author"],
                    f"/pdf/{i:040x}.pdf") for i in range(n)]


def serve(n: int, latency: float, urls, stop) -> None:
    server = ReplayServer(latency_s=latency, rate=RateWindow(limit=500, window_s=3600))
    server.add_notes("or2", VENUE, notes(n))
    with BackgroundReplay(server) as url:
        urls.put(url)
        stop.wait()


class Ours:
    def __init__(self, url: str):
        self.source = OpenReviewSource(v2_url=f"{url}/or2", v1_url=f"{url}/or1", web_url=url,
                                       username=USER, password=PASSWORD)

    def list(self) -> int:
        async def run():
            async with new_session() as session:
                return len((await self.source.list_venue(session, "ICLR", 2025)).papers)

        return asyncio.run(run())


class TheirClient:
    def __init__(self, url: str):
        import openreview

        with contextlib.redirect_stderr(io.StringIO()):
            self.client = openreview.api.OpenReviewClient(baseurl=f"{url}/or2", username=USER, password=PASSWORD)

    def list(self) -> int:
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            return len(self.client.get_all_notes(content={"venueid": VENUE}))


def stats(url: str) -> dict:
    return json.load(urllib.request.urlopen(f"{url}/_replay/stats"))


def requests_so_far(url: str) -> int:
    return sum(stats(url)["hits"].values())


def measure(name: str, make, url: str, repeat: int, warm: bool) -> dict:
    times, requests, count = [], [], 0
    client = make(url) if warm else None
    if warm:
        client.list()  # logged in and listed once before timing
    for _ in range(repeat):
        before = requests_so_far(url)
        t = time.perf_counter()
        count = (client or make(url)).list()
        times.append(time.perf_counter() - t)
        requests.append(requests_so_far(url) - before)
    return {"name": name, "papers": count, "s": statistics.median(times), "requests": requests[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=4000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(args.papers, args.latency, urls, stop), daemon=True)
    proc.start()
    url = urls.get(timeout=60)
    try:
        rows = []
        for warm in (False, True):
            rows.append(measure("annapurna OpenReviewSource", Ours, url, args.repeat, warm) | {"warm": warm})
            rows.append(measure("openreview-py get_all_notes", TheirClient, url, args.repeat, warm) | {"warm": warm})
        final = stats(url)
    finally:
        stop.set()
        proc.join(10)
    print(f"machine: {platform.machine()} {platform.system()}, {multiprocessing.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.papers} notes, {args.latency * 1000:.0f} ms latency per request, server in its own process, "
          f"median of {args.repeat}; advertised policy 500;w=3600; requests in all: {sum(final['hits'].values())}, "
          f"refused with 429: {final['rate_limited']}")
    print(f"{'client':30} {'login':6} {'papers':>7} {'requests':>9} {'seconds':>8} {'papers/s':>9}")
    for r in rows:
        print(f"{r['name']:30} {'warm' if r['warm'] else 'cold':6} {r['papers']:>7} {r['requests']:>9} "
              f"{r['s']:>8.3f} {r['papers'] / r['s']:>9.0f}")
    for i, label in ((0, "cold (login timed)"), (2, "warm (logged in)")):
        print(f"speed-up, {label}: {rows[i + 1]['s'] / rows[i]['s']:.1f}x")


if __name__ == "__main__":
    main()
