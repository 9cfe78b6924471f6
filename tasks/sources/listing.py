"""What every source's listing returns: the papers it could read and, one line each, the
problems it met (a bad page, an entry with no title). A problem never stops a listing."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError

from blocks.paper import Paper


class Listing(BaseModel):
    papers: list[Paper] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    total: int | None = Field(None, description="what the source says it holds, when it says")
    complete: bool = Field(True, description="False when the walk ended before the source's last page")

    def add(self, where: str, **fields) -> Paper | None:
        """Build a Paper from parsed fields; an invalid one becomes a problem, not a crash."""
        try:
            paper = Paper(**fields)
        except ValidationError as e:
            err = e.errors()[0]
            self.problems.append(f"{where}: skipped an entry: {err['msg'].removeprefix('Value error, ')}")
            return None
        self.papers.append(paper)
        return paper

    def extend(self, other: "Listing") -> None:
        self.papers += other.papers
        self.problems += other.problems
        self.complete = self.complete and other.complete
