"""The cheap local pre-filter, before any model call: how close a paper's title and
abstract are to the team's interests (TF-IDF cosine plus keyword hits), and whether it
nearly duplicates a paper already indexed. Below the threshold a paper is rejected at zero
token cost. In the spirit of arxiv-sanity-lite's TF-IDF ranking, in plain Python."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from pydantic import BaseModel

from blocks.paper import Paper

WORD = re.compile(r"[a-z][a-z0-9]+(?:-[a-z0-9]+)*")
STOP = set("""a an and are as at be by for from has have in into is it its of on or our that the their this
to we with which using use via can these those than then also more most show shows paper propose proposed
method methods approach results new based such while not only both between over under""".split())
CANDIDATE_TERMS = 24  # terms of a paper used to find near-duplicate candidates


def words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP]


def bigrams(ws: list[str]) -> list[str]:
    return [f"{a}_{b}" for a, b in zip(ws, ws[1:])]


def terms(text: str) -> list[str]:
    ws = words(text)
    return ws + bigrams(ws)


class Vectorizer:
    """TF-IDF over a corpus: sublinear tf, smoothed idf, unit-length vectors."""

    def __init__(self, documents: list[str]):
        self.n = len(documents)
        self.df: Counter[str] = Counter()
        for doc in documents:
            self.df.update(set(terms(doc)))

    def vector(self, text: str) -> dict[str, float]:
        tf = Counter(terms(text))
        vec = {t: (1 + math.log(c)) * (math.log((1 + self.n) / (1 + self.df.get(t, 0))) + 1) for t, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(t, 0.0) for t, v in a.items())


class TriageDecision(BaseModel):
    paper_id: str
    score: float
    keep: bool
    reason: str
    duplicate_of: str | None = None


def text_of(p: Paper) -> str:
    return f"{p.title}. {p.abstract}"


def prefilter(papers: list[Paper], indexed: list[Paper], interests: str, keywords: list[str],
              threshold: float, duplicate_threshold: float) -> list[TriageDecision]:
    """A decision per paper, in order. Near-duplicates are looked for among the indexed
    papers and the ones before it in this list."""
    keywords = [k.strip().lower() for k in keywords if k.strip()]
    candidates = [p for p in indexed if p.id not in {q.id for q in papers}]
    vec = Vectorizer([text_of(p) for p in candidates + papers] + [interests])
    profile = vec.vector(interests + " " + " ".join(keywords))
    seen: list[tuple[str, dict[str, float]]] = [(p.id, vec.vector(text_of(p))) for p in candidates]
    postings: dict[str, list[int]] = defaultdict(list)

    def index_doc(i: int, v: dict[str, float]) -> None:
        for t in sorted(v, key=v.get, reverse=True)[:CANDIDATE_TERMS]:
            postings[t].append(i)

    for i, (_, v) in enumerate(seen):
        index_doc(i, v)
    decisions = []
    for p in papers:
        v = vec.vector(text_of(p))
        lowered = text_of(p).lower()
        hits = [k for k in keywords if k in lowered]
        score = min(1.0, cosine(v, profile) + 0.1 * min(3, len(hits)))
        top = sorted(v, key=v.get, reverse=True)[:CANDIDATE_TERMS]
        near = {i for t in top for i in postings.get(t, ())}
        dup = max(((cosine(v, seen[i][1]), seen[i][0]) for i in near), default=(0.0, None))
        if dup[0] >= duplicate_threshold:
            decisions.append(TriageDecision(paper_id=p.id, score=round(score, 4), keep=False, duplicate_of=dup[1],
                                            reason=f"near-duplicate of {dup[1]} (cosine {dup[0]:.2f})"))
        elif score < threshold:
            decisions.append(TriageDecision(paper_id=p.id, score=round(score, 4), keep=False,
                                            reason=f"pre-filter: relevance {score:.3f} below {threshold}"))
        else:
            decisions.append(TriageDecision(paper_id=p.id, score=round(score, 4), keep=True,
                                            reason=f"pre-filter: relevance {score:.3f}" + (f"; keywords {', '.join(hits)}" if hits else "")))
        seen.append((p.id, v))
        index_doc(len(seen) - 1, v)
    return decisions
