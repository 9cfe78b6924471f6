"""A picture of the day's work: executions per day (trained / failed) and the loss curves of
the runs, from each result's `metrics_series`. Drawn with PyMuPDF, which the project already
has, and rendered to PNG."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path

import pymupdf

from blocks.settings import Settings, filesystem, load_settings, paper_index
from tasks.storage import read_object
from trainium_worker.verdict import loss_series

W, H, PAD = 900, 420, 48
COLORS = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
          (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5)]
GREEN, RED, GREY = (0.2, 0.6, 0.3), (0.8, 0.25, 0.2), (0.35, 0.35, 0.35)


def _frame(page, rect: pymupdf.Rect, title: str) -> None:
    page.draw_line(rect.bl, rect.br, color=GREY)
    page.draw_line(rect.bl, rect.tl, color=GREY)
    page.insert_text((rect.x0, rect.y0 - 10), title, fontsize=11, color=(0, 0, 0))


def plot(since: datetime, path: Path, s: Settings | None = None) -> Path:
    s = s or load_settings()
    papers = paper_index(s).list_papers(since=since, limit=100000)
    runs: Counter[tuple[str, bool]] = Counter()  # (day, trained) -> runs; trained is the worker's verdict
    for p in papers:
        for v in p.code_versions:
            if v.success is not None and (v.ran_at or v.created_at) >= since:
                runs[(v.run_day, v.training == "trained")] += 1
    results_fs, curves = filesystem("results", s), []
    for p in papers:
        for v in p.code_versions:
            data = read_object(results_fs, v.result_key) if v.result_key else None
            series = json.loads(data).get("metrics_series", []) if data else []
            losses = [x for x in loss_series(series)[1] if math.isfinite(x)]
            if len(losses) >= 2:
                curves.append((f"{p.title[:28]} v{v.version}", losses))
    doc = pymupdf.open()
    page = doc.new_page(width=W, height=H)
    page.insert_text((PAD, 24), f"Annapurna since {since:%Y-%m-%d %H:%M}", fontsize=13)
    left = pymupdf.Rect(PAD, 70, W / 2 - PAD / 2, H - PAD)
    right = pymupdf.Rect(W / 2 + PAD / 2, 70, W - PAD, H - PAD)
    _frame(page, left, "runs per day (green trained, red did not: failed, no learning, diverged)")
    days = sorted({d for d, _ in runs})
    top = max([runs[(d, True)] + runs[(d, False)] for d in days] or [1])
    width = left.width / max(len(days), 1)
    for i, day in enumerate(days):
        x0, base = left.x0 + i * width + width * 0.15, left.y1
        for ok, color in ((True, GREEN), (False, RED)):
            height = runs[(day, ok)] / top * (left.height - 10)
            if height:
                page.draw_rect(pymupdf.Rect(x0, base - height, x0 + width * 0.7, base), color=color, fill=color)
            base -= height
        page.insert_text((x0, left.y1 + 14), day[5:], fontsize=8, color=GREY)
    page.insert_text((left.x0 - 30, left.y0 + 4), str(top), fontsize=8, color=GREY)
    _frame(page, right, "training loss per run (normalised to its first value)")
    for value in (0.0, 0.5, 1.0, 1.5):
        y = right.y1 - value / 1.5 * right.height
        page.insert_text((right.x0 - 22, y + 3), f"{value:g}", fontsize=8, color=GREY)
    for i, (label, losses) in enumerate(curves[: len(COLORS)]):
        first = losses[0] or 1.0
        ys = [min(1.5, max(0.0, v / first)) for v in losses]
        points = [(right.x0 + j / (len(ys) - 1) * right.width, right.y1 - y / 1.5 * right.height) for j, y in enumerate(ys)]
        page.draw_polyline(points, color=COLORS[i], width=1.6)
        page.insert_text((right.x0 + 8, right.y0 + 14 + 12 * i), label, fontsize=8, color=COLORS[i])
    if not curves:
        page.insert_text((right.x0 + 10, right.y0 + 30), "no run reported two loss values", fontsize=9, color=GREY)
    page.get_pixmap(dpi=110).save(str(path))
    return path
