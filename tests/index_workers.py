"""Bodies of the processes that write to one index at once (spawned, so importable)."""

from __future__ import annotations

from blocks.index import PaperIndex
from blocks.paper import Paper


def paper(i: str, title: str = "Concurrent writers") -> Paper:
    return Paper(id=f"arxiv:{i}", source="arxiv", venue="arXiv", title=title)


def bump(p: Paper) -> Paper:
    return p.model_copy(update={"extra": {**p.extra, "n": p.extra.get("n", 0) + 1}})


def hammer(index: PaperIndex, worker: int, rounds: int) -> None:
    """Interleave inserts of own and shared papers with read-modify-writes of one record."""
    for i in range(rounds):
        index.add_new([paper(f"w{worker}.{i}"), paper(f"shared.{i}")])
        index.update("arxiv:counter", bump)
