"""A local HTTP server that stands in for arXiv, OpenReview, PMLR, the NeurIPS/MLSys
proceedings and PDF hosts, serving responses in the exact formats of the recorded ones.

The tests load it with the recorded responses from ../shared/fixtures and with the
project's own small corpus; the demo and the benchmarks use the project's own. It speaks
real HTTP on 127.0.0.1, so the real scrapers run against it unchanged.

Paths: /arxiv/api/query, /or2 (OpenReview v2) and /or1 (v1) with /login and /notes,
/pmlr/..., /neurips/..., /mlsys/..., and anything else added with `add`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import orjson
from aiohttp import web

CHALLENGE = {
    "name": "ChallengeRequiredError",
    "message": "A challenge is required to access this resource",
    "status": 403,
}


@dataclass
class Canned:
    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return web.Response(body=body, status=self.status, headers={"Content-Type": self.content_type, **self.headers})


@dataclass
class RateWindow:
    """A fixed window like OpenReview's `ratelimit-policy: 500;w=3600`."""

    limit: int = 500
    window_s: float = 3600
    started: float | None = None  # the window opens with the first request
    used: int = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        if self.started is None or now - self.started >= self.window_s:
            self.started, self.used = now, 0
        self.used += 1
        reset = max(0.0, self.window_s - (now - self.started))
        headers = {
            "ratelimit-policy": f"{self.limit};w={int(self.window_s) if self.window_s >= 1 else self.window_s}",
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(max(0, self.limit - self.used)),
            "ratelimit-reset": f"{reset:.3f}".rstrip("0").rstrip(".") or "0",
        }
        return self.used <= self.limit, headers


class ReplayServer:
    def __init__(self, latency_s: float = 0.0, rate: RateWindow | None = None,
                 users: dict[str, str] | None = None):
        self.latency_s = latency_s
        self.rate = rate or RateWindow()
        self.users = users if users is not None else {"annapurna@example.org": "demo-password"}
        self.canned: dict[str, deque[Canned]] = defaultdict(deque)
        self.arxiv: dict[int, deque[Canned]] = defaultdict(deque)
        self.notes: dict[tuple[str, str], list[dict]] = {}
        self.hits: Counter[str] = Counter()
        self.times: list[tuple[str, float]] = []
        self.rate_limited = 0
        self._tokens: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- loading ----------------------------------------------------------------------
    def add(self, path: str, *responses: Canned) -> None:
        """Serve these responses at `path`, in order; the last one repeats."""
        self.canned[path].extend(responses)

    def add_arxiv_page(self, start: int, *responses: Canned) -> None:
        self.arxiv[start].extend(responses)

    def add_notes(self, host: str, venueid: str, notes: list[dict]) -> None:
        """Notes (v2 shape for host 'or2', v1 for 'or1') for `content.venueid=venueid`."""
        self.notes[(host, venueid)] = notes

    def add_invitation_notes(self, host: str, invitation: str, notes: list[dict]) -> None:
        """Notes for `invitation=...` (how API v1 lists a venue's submissions)."""
        self.notes[(host, f"invitation:{invitation}")] = notes

    # -- serving ----------------------------------------------------------------------
    @staticmethod
    def _next(queue: deque[Canned]) -> Canned:
        return queue.popleft() if len(queue) > 1 else queue[0]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/_replay/stats":
            self.hits[request.path] += 1
        self.times.append((request.path, time.monotonic()))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        path = request.path
        host, _, rest = path.lstrip("/").partition("/")
        if path == "/_replay/stats":
            return web.json_response({"hits": dict(self.hits), "rate_limited": self.rate_limited})
        if path == "/arxiv/api/query":
            start = int(request.query.get("start", 0))
            self.hits[f"{path}@start={start}"] += 1
            if start in self.arxiv:
                return self._next(self.arxiv[start]).response()
            return Canned(empty_atom_feed(start), content_type="application/atom+xml").response()
        if host in ("or1", "or2") and rest in ("login", "notes"):
            return await self._openreview(request, host, rest)
        if path in self.canned:
            return self._next(self.canned[path]).response()
        return web.Response(status=404, text=f"replay server: nothing recorded for {path}")

    async def _openreview(self, request: web.Request, host: str, endpoint: str) -> web.Response:
        allowed, headers = self.rate.take()
        if not allowed:
            self.rate_limited += 1
            return web.json_response({"name": "RateLimitError", "status": 429}, status=429,
                                     headers={**headers, "Retry-After": headers["ratelimit-reset"]})
        if endpoint == "login":
            creds = await request.json()
            if self.users.get(creds.get("id")) != creds.get("password"):
                return web.json_response({"name": "InvalidCredentialsError", "status": 400}, status=400, headers=headers)
            token = f"token-{len(self._tokens)}"
            self._tokens.add(token)
            return web.json_response({"token": token, "user": {"id": creds["id"], "profile": {"id": "~Annapurna_Demo1"}}},
                                     headers=headers)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self._tokens:
            return web.json_response(CHALLENGE, status=403, headers=headers)
        q = request.query
        key = q["content.venueid"] if "content.venueid" in q else f"invitation:{q.get('invitation', '')}"
        notes = self.notes.get((host, key), [])
        if q.get("sort", "").startswith("id"):
            notes = sorted(notes, key=lambda n: n["id"])
        limit = min(int(q.get("limit", 1000)), 1000)
        if "after" in q:
            ids = [n["id"] for n in notes]
            start = ids.index(q["after"]) + 1 if q["after"] in ids else len(ids)
        else:
            start = int(q.get("offset", 0))
        body: dict = {"notes": notes[start : start + limit]}
        if "offset" in q or q.get("count") in ("true", "True"):
            body["count"] = len(notes)  # OpenReview sends count only when asked or offset is sent
        return web.Response(body=orjson.dumps(body), headers={"Content-Type": "application/json; charset=utf-8", **headers})

    async def start(self) -> str:
        app = web.Application(client_max_size=2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def empty_atom_feed(start: int) -> str:
    return atom_feed([], total=start, start=start)


def atom_feed(entries: list[str], total: int, start: int = 0) -> str:
    """A feed in the layout arXiv serves today (namespaces declared on <feed>)."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">\n'
        "  <id>https://arxiv.org/api/replay</id>\n  <title>arXiv Query: replay</title>\n"
        f"  <opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>\n"
        f"  <opensearch:totalResults>{total}</opensearch:totalResults>\n"
        f"  <opensearch:startIndex>{start}</opensearch:startIndex>\n" + "".join(entries) + "</feed>\n"
    )


def atom_entry(arxiv_id: str, title: str, abstract: str, authors: list[str], published: str,
               categories: list[str], pdf_url: str) -> str:
    from xml.sax.saxutils import escape

    cats = "".join(f'    <category term="{c}" scheme="http://arxiv.org/schemas/atom"/>\n' for c in categories)
    names = "".join(f"    <author>\n      <name>{escape(a)}</name>\n    </author>\n" for a in authors)
    return (
        f"  <entry>\n    <id>http://arxiv.org/abs/{arxiv_id}v1</id>\n    <title>{escape(title)}</title>\n"
        f"    <updated>{published}</updated>\n"
        f'    <link href="https://arxiv.org/abs/{arxiv_id}v1" rel="alternate" type="text/html"/>\n'
        f'    <link href="{pdf_url}" rel="related" type="application/pdf" title="pdf"/>\n'
        f"    <summary>{escape(abstract)}</summary>\n{cats}    <published>{published}</published>\n"
        f'    <arxiv:primary_category term="{categories[0]}"/>\n{names}  </entry>\n'
    )


def v2_note(forum: str, number: int, venueid: str, venue: str, title: str, abstract: str,
            authors: list[str], pdf_path: str) -> dict:
    """A note in the API v2 shape of the recorded ICLR 2025 listing (`content.*.value`)."""
    v = lambda x: {"value": x}  # noqa: E731
    return {
        "content": {
            "title": v(title), "abstract": v(abstract), "authors": v(authors),
            "authorids": v([f"~{a.replace(' ', '_')}1" for a in authors]),
            "keywords": v([]), "pdf": v(pdf_path), "venue": v(venue), "venueid": v(venueid),
            "paperhash": v("|".join(a.split()[-1].lower() for a in authors[:1]) + "|" + "_".join(title.lower().split()[:4])),
        },
        "forum": forum, "id": forum, "number": number,
        "invitations": [f"{venueid}/-/Submission", f"{venueid}/-/Post_Submission"],
        "readers": ["everyone"],
    }


class BackgroundReplay:
    """A ReplayServer on its own event loop in a thread, for code that runs its own loop
    (flows, workers, CLIs): `with BackgroundReplay(server) as url: ...`."""

    def __init__(self, server: ReplayServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = None

    def __enter__(self) -> str:
        import threading

        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="replay-server")
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
