"""The LLM judge: is a paper relevant to the team, novel, and implementable as a small
PyTorch program? Judged from title, abstract and the first pages, not the whole PDF."""

from __future__ import annotations

import json

from langchain_core.language_models.chat_models import BaseChatModel
from pydantic import BaseModel, ValidationError

from blocks.paper import Paper, Verdict
from blocks.settings import Settings
from tasks.llm import LLMError, Usage, ask, json_block, replay_key

PROMPT_VERSION = "judge-v1"
EXCERPT_CHARS = 6000  # about the first two pages

SYSTEM = """Task: judge
You triage machine-learning papers for a research team. Decide whether the paper matters to
the team's interests and whether its core idea can be implemented as one small, self-contained
PyTorch training program (synthetic data or a small staged dataset, minutes on one accelerator).
Answer with exactly one JSON object and nothing else:
{"relevant": true|false, "relevance": 0.0-1.0, "novelty": 0.0-1.0, "topics": ["..."],
 "reason": "one or two sentences", "implementable": true|false}"""


class JudgeOutcome(BaseModel):
    paper_id: str
    verdict: Verdict | None = None
    error: str | None = None
    usage: Usage = Usage()
    model: str = ""


def judge_prompt(paper: Paper, excerpt: str, interests: str) -> str:
    return (
        f"Replay-Key: {replay_key('judge', paper.id)}\n"
        f"Team interests: {interests}\n\n"
        f"Paper id: {paper.id}\nVenue: {paper.venue} {paper.year or ''}\nTitle: {paper.title}\n"
        f"Abstract: {paper.abstract or '(none)'}\n\nFirst pages:\n{excerpt[:EXCERPT_CHARS] or '(no text)'}"
    )


def parse_verdict(text: str, model: str) -> Verdict:
    try:
        data = json.loads(json_block(text))
        return Verdict(**{**data, "model": model, "prompt_version": PROMPT_VERSION})
    except (ValueError, TypeError, ValidationError) as e:
        first = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise LLMError(f"judge output unparseable: {first}; answer began {text[:80]!r}") from None


def judge_paper(paper: Paper, excerpt: str, s: Settings, model: BaseChatModel) -> JudgeOutcome:
    """Ask the judge; an answer that does not parse is sent back once with the error."""
    user = judge_prompt(paper, excerpt, s.interests)
    answer = ask(model, SYSTEM, user, s)
    usage = answer.usage
    try:
        return JudgeOutcome(paper_id=paper.id, verdict=parse_verdict(answer.text, answer.model), usage=usage, model=answer.model)
    except LLMError as first:
        retry = ask(model, SYSTEM, f"{user}\n\nYour previous answer could not be used ({first}). "
                    "Answer again with exactly one JSON object of the given shape.", s)
        usage = usage + retry.usage
        try:
            verdict = parse_verdict(retry.text, retry.model)
        except LLMError as second:
            return JudgeOutcome(paper_id=paper.id, error=str(second), usage=usage, model=retry.model)
        return JudgeOutcome(paper_id=paper.id, verdict=verdict, usage=usage, model=retry.model)
