"""Did the program train? Decided by the worker from what it measured — the loss series the
program printed, its training loop, the device it really ran on — never from the program's
own word. And, where the program reports its method against a baseline, which won."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

Outcome = Literal["trained", "no_learning", "diverged", "failed"]
LOSS_KEYS = ("loss", "train_loss", "training_loss", "method/loss", "method/train_loss", "method/training_loss")
LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "nll", "bpd", "wer", "cer")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "bleu", "rouge", "auc", "score", "reward", "precision", "recall", "r2")


class VerdictRules(BaseModel):
    min_loss_points: int = Field(5, ge=2, description="loss values a run must report to be judged at all")
    min_loss_drop: float = Field(0.05, ge=0, lt=1, description="fraction the loss must fall, first fifth to last")
    divergence_factor: float = Field(2.0, gt=1, description="a loss rising by more than this factor diverged")


class Verdict(BaseModel):
    verdict: Outcome
    reason: str
    loss_key: str | None = None
    headline_metric: str | None = None
    beats_baseline: bool | None = Field(None, description="None: no method/baseline pair reported for a metric "
                                                          "whose direction is known")


def loss_series(series: list[dict]) -> tuple[str | None, list[float]]:
    """The training loss the program reported, step by step: the first of LOSS_KEYS it
    used, else any key ending in `loss` that is not the baseline's or a validation's."""
    keys = [k for rec in series for k in rec]
    candidates = [k for k in LOSS_KEYS if k in keys] or [
        k for k in dict.fromkeys(keys) if k.endswith("loss") and not k.startswith("baseline/") and "val" not in k]
    if not candidates:
        return None, []
    key = candidates[0]
    values = []
    for rec in series:
        v = rec.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values.append(float(v))
        elif v is None and key in rec:
            values.append(float("nan"))  # a NaN the JSON writer turned into null
    return key, values


def _fifth_means(values: list[float]) -> tuple[float, float]:
    n = max(1, len(values) // 5)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def direction(metric: str) -> str | None:
    name = metric.lower()
    if any(w in name for w in LOWER_IS_BETTER):
        return "lower"
    if any(w in name for w in HIGHER_IS_BETTER):
        return "higher"
    return None


def beats_baseline(metrics: dict, headline: str | None = None, better: str | None = None) -> tuple[str | None, bool | None]:
    """The paper's method against its baseline on the headline metric (`method/<m>` and
    `baseline/<m>`); the direction comes from the plan, else from the metric's name."""
    pairs = [k.removeprefix("method/") for k in metrics if k.startswith("method/") and f"baseline/{k[7:]}" in metrics]
    if headline:
        pairs = [headline] if headline in pairs else []
    for metric in pairs:
        m, b = metrics[f"method/{metric}"], metrics[f"baseline/{metric}"]
        way = better or direction(metric)
        if way and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (m, b)):
            return metric, (m < b) if way == "lower" else (m > b)
    return (pairs[0] if pairs else headline), None


def judge(finished: bool, failure: str | None, has_loop: bool, series: list[dict], metrics: dict,
          rules: VerdictRules, headline: str | None = None, better: str | None = None) -> Verdict:
    metric, beats = beats_baseline(metrics, headline, better)
    key, losses = loss_series(series)
    common = {"loss_key": key, "headline_metric": metric, "beats_baseline": beats}
    if not finished:
        return Verdict(verdict="failed", reason=failure or "did not finish", **common)
    if any(not math.isfinite(v) for v in losses):
        return Verdict(verdict="diverged", reason=f"non-finite {key}", **common)
    if not has_loop:
        return Verdict(verdict="no_learning", reason="no training loop (backward and optimizer step in a loop)", **common)
    if len(losses) < rules.min_loss_points:
        return Verdict(verdict="no_learning", reason=f"{len(losses)} loss values reported, fewer than "
                                                     f"{rules.min_loss_points}", **common)
    first, last = _fifth_means(losses)
    if last > first * rules.divergence_factor and last > 0:
        return Verdict(verdict="diverged", reason=f"{key} rose from {first:.4g} to {last:.4g}", **common)
    drop = (first - last) / abs(first) if first else 0.0
    if drop < rules.min_loss_drop:
        return Verdict(verdict="no_learning", reason=f"{key} fell {drop:.1%} ({first:.4g} -> {last:.4g}), under "
                                                     f"{rules.min_loss_drop:.0%}", **common)
    return Verdict(verdict="trained", reason=f"{key} fell {drop:.1%} ({first:.4g} -> {last:.4g}) over "
                                             f"{len(losses)} points", **common)
