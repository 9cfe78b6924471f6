"""HTTP for every source: one aiohttp session, retries with backoff on 429, 5xx and
connection errors (honouring Retry-After), and a streamed PDF download with a size cap."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp

from blocks.errors import AnnapurnaError

RETRY_STATUS = {429, 500, 502, 503, 504}
#: No listing page, feed or abstract page we read comes near this; a body past it is refused.
MAX_RESPONSE_BYTES = 64 * 2**20
USER_AGENT = "annapurna/0.1 (+https://github.com/annapurna; research paper triage)"
Throttle = Callable[[], Awaitable[None]]
T = TypeVar("T")
#: Retries are logged here; prefect.yaml sets PREFECT_LOGGING_EXTRA_LOGGERS=annapurna so that
#: they reach a flow run's log in the UI, not only the worker's terminal.
log = logging.getLogger("annapurna.sources")


class SourceError(AnnapurnaError):
    """A source answered with something we cannot use; the message says what and where."""


class PermanentSourceError(SourceError):
    """Asking again will not help (credentials refused, unknown venue, wrong host)."""


def retry_unless_permanent(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a failed source task unless its error is permanent."""
    try:
        state.result(_sync=True)  # also from async tasks, where result() would be a coroutine
    except PermanentSourceError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


class DownloadError(SourceError):
    """A file could not be downloaded as a PDF."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class Retrying:
    """How hard to try: attempts in all, and the backoff base in seconds."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    retried: int = field(default=0, compare=False)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.backoff_s * 2**attempt, self.max_backoff_s) * (0.5 + random.random())


def new_session(timeout_s: float = 60, connections: int = 8) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=aiohttp.TCPConnector(limit=connections),
        headers={"User-Agent": USER_AGENT},
    )


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: str | None = None):
        self.reason, self.retry_after = reason, retry_after


async def _with_retries(what: str, retrying: Retrying, once: Callable[[], Awaitable[T]], error=SourceError) -> T:
    last = ""
    for attempt in range(retrying.attempts):
        try:
            return await once()
        except _Transient as t:
            last, wait = t.reason, retrying.delay(attempt, t.retry_after)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
            last, wait = f"{type(e).__name__}: {e}", retrying.delay(attempt, None)
        if attempt + 1 < retrying.attempts:
            retrying.retried += 1
            log.warning("%s: %s; attempt %d of %d in %.1f s", what, last, attempt + 2, retrying.attempts, wait)
            await asyncio.sleep(wait)
    raise error(f"{what}: gave up after {retrying.attempts} attempts ({last})")


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    retrying: Retrying | None = None,
    throttle: Throttle | None = None,
    ok: frozenset[int] = frozenset({200}),
    max_bytes: int = MAX_RESPONSE_BYTES,
    **kwargs,
) -> Response:
    """One request, retried on 429/5xx/connection errors; other statuses are returned
    when listed in `ok` and raised as SourceError otherwise. A body over `max_bytes` is
    refused (a permanent error: asking again gets the same body)."""

    async def once() -> Response:
        if throttle:
            await throttle()
        async with session.request(method, url, **kwargs) as resp:
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise PermanentSourceError(f"{method} {url}: response over the {max_bytes}-byte cap")
                chunks.append(chunk)
            body = b"".join(chunks)
            if resp.status in ok:
                return Response(resp.status, dict(resp.headers), body, str(resp.url))
            if resp.status in RETRY_STATUS:
                raise _Transient(f"HTTP {resp.status}", resp.headers.get("Retry-After"))
            raise SourceError(f"{method} {url}: HTTP {resp.status}: {body[:300]!r}")

    return await _with_retries(f"{method} {url}", retrying or Retrying(), once)


async def download_pdf(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int = 50 * 2**20,
    retrying: Retrying | None = None,
) -> bytes:
    """The PDF at `url`, streamed, refused past `max_bytes` or when it is not a PDF."""

    async def once() -> bytes:
        async with session.get(url) as resp:
            if resp.status in RETRY_STATUS:
                raise _Transient(f"HTTP {resp.status}", resp.headers.get("Retry-After"))
            if resp.status != 200:
                raise DownloadError(f"PDF {url}: HTTP {resp.status}")
            if resp.content_length and resp.content_length > max_bytes:
                raise DownloadError(f"PDF {url}: {resp.content_length} bytes, over the {max_bytes}-byte cap")
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                if not chunks and not chunk.lstrip()[:5].startswith(b"%PDF"):
                    kind = resp.headers.get("Content-Type", "?")
                    raise DownloadError(f"PDF {url}: not a PDF (Content-Type {kind}, starts {chunk[:16]!r})")
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"PDF {url}: over the {max_bytes}-byte cap")
                chunks.append(chunk)
            return b"".join(chunks)

    return await _with_retries(f"PDF {url}", retrying or Retrying(), once, DownloadError)
