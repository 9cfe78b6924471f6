"""Reading a program's output as it arrives: keep the tail up to a cap, count the rest,
and pick out every `METRICS: {json}` line, so metrics survive truncation and a flood can
fill neither memory nor disk."""

from __future__ import annotations

import json
from collections import deque

MARKER = b"METRICS:"
MAX_LINE = 1 << 20  # a METRICS line longer than this is not a metrics line


class Tail:
    """The last `cap` bytes of a stream, and how many bytes it had in all."""

    def __init__(self, cap: int):
        self.cap, self.total, self._size = cap, 0, 0
        self._chunks: deque[bytes] = deque()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self.cap:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self.cap :]
        if self.total > len(data):
            data = f"[... {self.total - len(data)} earlier bytes not kept ...]\n".encode() + data
        return data.decode("utf-8", errors="replace")


class MetricsScanner:
    """Every METRICS line in order (the series) and their merge (later values win)."""

    def __init__(self) -> None:
        self.series: list[dict] = []
        self.merged: dict = {}
        self.notes: list[str] = []
        self._partial = b""
        self._line = 0

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._partial = data if len(data) <= MAX_LINE else b""
            return
        complete, self._partial = data[: last_nl + 1], data[last_nl + 1 :]
        if len(self._partial) > MAX_LINE:
            self._partial = b""
        if MARKER not in complete:
            self._line += complete.count(b"\n")
            return
        for line in complete.split(b"\n")[:-1]:
            self._line += 1
            if MARKER in line:
                self._parse(line)

    def close(self) -> None:
        if MARKER in self._partial:
            self._line += 1
            self._parse(self._partial)
        self._partial = b""

    def _parse(self, line: bytes) -> None:
        payload = line.split(MARKER, 1)[1].strip()
        try:
            value = json.loads(payload)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            self.notes.append(f"stdout line {self._line}: malformed METRICS line skipped ({e})")
            return
        self.series.append(value)
        self.merged.update(value)
