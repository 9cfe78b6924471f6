"""Code generation: a short plan, then one self-contained PyTorch program that follows the
execution contract; checked statically before anything runs, sent back once with the
findings, and repaired from a failed run's error tail."""

from __future__ import annotations

import re

from langchain_core.language_models.chat_models import BaseChatModel
from pydantic import BaseModel, Field

from blocks.paper import Paper, Verdict
from blocks.settings import Settings
from tasks.llm import LLMError, Usage, ask, replay_key
from tasks.program_checks import check_program

PROMPT_VERSION = "codegen-v2"
ERROR_TAIL_CHARS = 2000
SYSTEM = """Task: codegen
You turn a machine-learning paper into ONE self-contained PyTorch program that tests its core
idea at small scale. First write a short plan, then the program.

Format exactly:
PLAN:
model: <what is built>
data: <"synthetic: ..." or the name of a dataset under $ANNAPURNA_DATA_DIR>
training: <loop, optimizer, steps>
baseline: <the method the paper compares against, trained the same way>
headline: <the paper's headline metric, one word> (<lower|higher> is better)
```python
<the program>
```

The program must:
- pick its device itself: torch_xla (xm.xla_device()) when importable, else CUDA, else CPU;
- on XLA call xm.mark_step() after optimizer.step();
- keep shapes static (fixed batch size, drop_last=True) and avoid .item() inside the loop;
- use synthetic data or a dataset from the directory in $ANNAPURNA_DATA_DIR; never download;
- import only torch, numpy and the Python standard library; never call .cuda();
- finish within a few minutes on one device;
- train the paper's method AND its baseline under the same budget (same data, steps and size);
- print lines `METRICS: {json}`: "method/loss" and "baseline/loss" at least 10 times during
  training, and at the end "method/<headline>" and "baseline/<headline>" for the headline metric."""


class Program(BaseModel):
    plan: str
    dataset: str
    code: str
    headline_metric: str | None = None
    better: str | None = None  # lower / higher


class GenerationOutcome(BaseModel):
    paper_id: str
    version: int
    program: Program | None = None
    findings: list[str] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Usage()
    model: str = ""


def parse_program(text: str) -> Program:
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", text, re.S)
    if not blocks:
        raise LLMError(f"codegen output unparseable: no ```python block; answer began {text[:80]!r}")
    code = max(blocks, key=len)
    plan = text[: text.find("```")].strip().removeprefix("PLAN:").strip()
    data = re.search(r"^\s*data:\s*(.+)$", plan, re.M | re.I)
    headline = re.search(r"^\s*headline:\s*([\w./-]+)\W*(?:.*?\b(lower|higher)\b)?", plan, re.M | re.I)
    return Program(plan=plan, dataset=data.group(1).strip() if data else "unspecified", code=code.strip() + "\n",
                   headline_metric=headline.group(1) if headline else None,
                   better=headline.group(2).lower() if headline and headline.group(2) else None)


def static_check(code: str) -> list[str]:
    """What is wrong with a program before it runs (blocking findings, each with its line);
    empty when nothing is. Advisory findings are in `advisories`."""
    return [str(f) for f in check_program(code) if f.blocking]


def advisories(code: str) -> list[str]:
    return [str(f) for f in check_program(code) if not f.blocking]


def codegen_prompt(paper: Paper, verdict: Verdict | None, excerpt: str, version: int,
                   previous: str | None = None, error_tail: str | None = None) -> str:
    parts = [
        f"Replay-Key: {replay_key('codegen', paper.id, version)}",
        f"Paper id: {paper.id}\nTitle: {paper.title}\nAbstract: {paper.abstract or '(none)'}",
    ]
    if verdict:
        parts.append(f"Judge's note: {verdict.reason} Topics: {', '.join(verdict.topics)}")
    parts.append(f"First pages:\n{excerpt[:4000] or '(no text)'}")
    if previous is not None:
        parts.append(f"This program failed when it ran:\n```python\n{previous}```\n"
                     f"Last {ERROR_TAIL_CHARS} characters of its stderr:\n{(error_tail or '')[-ERROR_TAIL_CHARS:]}\n"
                     "Write the fixed program, in the same format.")
    return "\n\n".join(parts)


def generate_program(paper: Paper, verdict: Verdict | None, excerpt: str, s: Settings, model: BaseChatModel,
                     version: int = 1, previous: str | None = None, error_tail: str | None = None) -> GenerationOutcome:
    """Plan and program for one paper (or a repair of `previous`). A program that fails the
    static checks goes back once with the findings."""
    user = codegen_prompt(paper, verdict, excerpt, version, previous, error_tail)
    usage, model_name, findings = Usage(), "", []
    for round_ in range(2):
        prompt = user if round_ == 0 else (
            f"{user}\n\nYour program failed these checks:\n- " + "\n- ".join(findings) + "\nFix them, same format.")
        answer = ask(model, SYSTEM, prompt, s)
        usage, model_name = usage + answer.usage, answer.model
        try:
            program = parse_program(answer.text)
        except LLMError as e:
            findings = [str(e)]
            continue
        findings = static_check(program.code)
        if not findings:
            return GenerationOutcome(paper_id=paper.id, version=version, program=program, usage=usage, model=model_name)
    return GenerationOutcome(paper_id=paper.id, version=version, findings=findings, usage=usage, model=model_name,
                             error="static checks failed: " + "; ".join(findings))
