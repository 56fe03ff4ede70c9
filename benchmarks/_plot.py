"""A small line chart drawn with Pillow (matplotlib is not a dependency of latent-vg).

Used by ``bench_e2e.py`` for ``latency_vs_batch.png``: one line per series, x = batch size (log2 axis when
the batches span more than a factor of 4), y = latency in ms, with axes, ticks, a grid and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe palette (Okabe-Ito) and a few extra tones for more series.
PALETTE = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
    (213, 94, 0), (240, 228, 66), (0, 0, 0), (120, 120, 120), (150, 80, 40),
]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (900, 560),
) -> Path:
    """Draw ``series`` (label -> [(x, y), ...]) as a PNG at ``path`` and return the path."""
    w, h = size
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # older Pillow: the fixed bitmap font
        font = ImageFont.load_default()
    left, right, top, bottom = 80, 250, 40, 60  # the legend sits in the right margin
    pts = [p for s in series.values() for p in s]
    xs = sorted({p[0] for p in pts}) or [1.0]
    ymax = max((p[1] for p in pts), default=1.0) * 1.08
    log_x = len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] > 4

    def fx(x: float) -> float:
        if len(xs) == 1:
            return (left + w - right) / 2
        a, b = (math.log2(xs[0]), math.log2(xs[-1])) if log_x else (xs[0], xs[-1])
        v = math.log2(x) if log_x else x
        return left + (v - a) / (b - a) * (w - right - left)

    def fy(y: float) -> float:
        return h - bottom - y / ymax * (h - top - bottom)

    yticks = _nice_ticks(0.0, ymax)
    for t in yticks:
        if t > ymax:
            continue
        y = fy(t)
        draw.line([(left, y), (w - right, y)], fill=(230, 230, 230))
        draw.text((left - 8, y), _fmt(t), fill="black", font=font, anchor="rm")
    for x in xs:
        draw.line([(fx(x), top), (fx(x), h - bottom)], fill=(240, 240, 240))
        draw.text((fx(x), h - bottom + 8), _fmt(x), fill="black", font=font, anchor="mt")
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black", width=2)
    draw.text(((left + w - right) / 2, 14), title, fill="black", font=font, anchor="mm")
    draw.text(((left + w - right) / 2, h - 22), xlabel + (" (log2 axis)" if log_x else ""), fill="black",
              font=font, anchor="mm")
    draw.text((8, top - 24), ylabel, fill="black", font=font)

    for i, (label, s) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = [(fx(x), fy(y)) for x, y in sorted(s)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=3)
        for x, y in line:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        ly = top + 10 + i * 20
        draw.line([(w - right + 16, ly), (w - right + 40, ly)], fill=colour, width=3)
        draw.text((w - right + 46, ly), label, fill="black", font=font, anchor="lm")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
