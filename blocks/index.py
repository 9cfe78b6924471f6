"""The paper index contract. Every backend (SQLite embedded, OpenSearch in production)
is a Prefect block implementing these methods, and one contract test suite runs
against each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime

from prefect.blocks.core import Block

from blocks.paper import Paper, PaperStatus


class PaperIndex(Block, ABC):
    """Where every paper's record lives, keyed by its stable id."""

    @abstractmethod
    def upsert(self, papers: Iterable[Paper]) -> int:
        """Write these records whole, replacing any with the same id. Returns how many."""

    @abstractmethod
    def add_new(self, papers: Iterable[Paper]) -> list[str]:
        """Insert the papers whose id is not yet indexed; leave the others untouched.

        This is how a scrape persists what it found: a re-run neither duplicates a paper
        nor resets one that has moved on. Returns the ids that were new.
        """

    @abstractmethod
    def get(self, paper_id: str) -> Paper | None: ...

    @abstractmethod
    def update(self, paper_id: str, change: Callable[[Paper], Paper]) -> Paper:
        """Read, change and write one record atomically, even across processes.

        If `change` raises, nothing is written. Raises UnknownPaperError for an unknown id.
        """

    @abstractmethod
    def search(self, text: str, limit: int = 20, status: PaperStatus | None = None) -> list[Paper]:
        """Full-text search over title and abstract, best match first."""

    @abstractmethod
    def list_papers(
        self,
        status: PaperStatus | None = None,
        venue: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Paper]:
        """Papers most recently updated first, optionally filtered."""

    @abstractmethod
    def counts(self) -> dict[PaperStatus, int]:
        """Number of papers in each status, every status present."""

    def require(self, paper_id: str) -> Paper:
        from blocks.errors import UnknownPaperError

        paper = self.get(paper_id)
        if paper is None:
            raise UnknownPaperError(paper_id)
        return paper

    def transition(
        self, paper_id: str, status: PaperStatus | str, reason: str | None = None, **changes
    ) -> Paper:
        """Move a paper to `status` (checked against the lifecycle) with other fields."""
        return self.update(paper_id, lambda p: p.advance(status, reason, **changes))
