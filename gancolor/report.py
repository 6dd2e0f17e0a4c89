"""A self-contained HTML report: a metrics table and an image grid.

Images are embedded as base64 JPEGs, so report.html can be mailed or attached to an
issue on its own. Every piece of text is escaped: file names are user data.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

# name -> (column title, what it measures, better when): shown in the table head and legend.
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "psnr": ("PSNR (dB)", "peak signal-to-noise ratio of output vs truth, sRGB in [0, 1], capped at 100 dB", "higher"),
    "ssim": ("SSIM", "structural similarity (kornia.metrics.ssim: 11x11 Gaussian window, sigma 1.5, on RGB in [0, 1], mean of the map)", "higher"),
    "mae": ("MAE", "mean absolute error, sRGB in [0, 1]", "lower"),
    "mse": ("MSE", "mean squared error, sRGB in [0, 1]", "lower"),
    "colorfulness": ("colourfulness", "Hasler & Suesstrunk (2003) M of the outputs (truth: colorfulness_true)", "closer to truth"),
    "colorfulness_true": ("colourfulness (truth)", "Hasler & Suesstrunk M of the true photos", "reference"),
    "colorfulness_ratio": ("colourfulness ratio (set)", "set-level: mean M of all outputs / mean M of all truths; near 0 is the gray/sepia collapse", "closer to 1"),
    "colorfulness_ratio_per_photo": ("colourfulness ratio (per photo, median)", "median over photos of each photo's M(output) / M(truth); every photo counts once", "closer to 1"),
    "hist_intersection_a": ("HI a", "histogram intersection of the a* distributions over the whole set (1-unit bins)", "higher"),
    "hist_intersection_b": ("HI b", "histogram intersection of the b* distributions over the whole set (1-unit bins)", "higher"),
    "lpips": ("LPIPS", "learned perceptual distance (Zhang et al. 2018)", "lower"),
    "fid": ("FID", "Frechet distance of Inception-v3 pool features, outputs vs truth (torchmetrics; network, weights and resize in the notes); needs >= 2048 photos unless forced", "lower"),
    "kid": ("KID", "kernel Inception distance (cubic polynomial-kernel MMD of the same features; unbiased, fine for small sets), mean over random subsets", "lower"),
    "kid_std": ("KID std", "standard deviation of KID over the subsets", "reference"),
    "top1": ("top-1", "classifier accuracy on these images: its first guess is the photo's class folder", "higher"),
    "top5": ("top-5", "classifier accuracy: the class is among its 5 first guesses (only with more than 5 classes)", "higher"),
}


@dataclass
class Report:
    title: str
    columns: list[str]  # metric names, in table order
    rows: list[tuple[str, dict]] = field(default_factory=list)  # (checkpoint, {metric: value or text})
    grid_header: list[str] = field(default_factory=list)
    grid: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)  # (caption, images)
    notes: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, markup from line_chart / html_table)


def format_value(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def _image_uri(pixels: np.ndarray, max_side: int = 320) -> str:
    image = Image.fromarray(pixels)
    if image.mode == "RGBA":
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# Distinguishable on white and in print (Okabe & Ito's colour-blind-safe palette).
LINE_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")


def line_chart(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, log_x: bool = False,
               width: int = 560, height: int = 320) -> str:
    """An inline SVG line chart, one line per series, every point marked and its x ticked.
    log_x: x drawn at log(1 + x), so that 0 and large counts fit on one axis. Self-contained:
    the report stays one file that opens with no network."""
    left, right, top, bottom = 56, 16, 12, 44
    if log_x:
        def xpos(x: float) -> float:
            return math.log1p(x)
    else:
        def xpos(x: float) -> float:
            return x
    points = [p for line in series.values() for p in line]
    xs = sorted({x for x, _ in points})
    ys = [y for _, y in points if math.isfinite(y)]
    if not xs or not ys:
        return ""
    x0, x1 = xpos(xs[0]), xpos(xs[-1])
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(x: float) -> float:
        return left + (xpos(x) - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(series)}" '
             f'role="img" aria-label="{escape(y_label)} against {escape(x_label)}" font-size="12" font-family="sans-serif">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="none" stroke="#999"/>']
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{escape(format_value(x))}</text>')
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    for i, (name, line) in enumerate(series.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        drawn = [(x, y) for x, y in sorted(line) if math.isfinite(y)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in drawn)
        parts.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>{escape(name)}: '
                     f'{escape(format_value(x))}, {y:.4g}</title></circle>' for x, y in drawn)
        legend_y = height + 14 + 18 * i
        parts.append(f'<line x1="{left}" x2="{left + 20}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{left + 26}" y="{legend_y}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain table of text cells, escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(report: Report) -> str:
    head = "".join(
        f'<th title="{escape(METRIC_INFO.get(c, (c, c, ""))[1])}">{escape(METRIC_INFO.get(c, (c,))[0])}</th>'
        for c in report.columns
    )
    body = []
    for name, values in report.rows:
        cells = []
        for column in report.columns:
            value = values.get(column)
            css = ' class="na"' if isinstance(value, str) else ""
            cells.append(f"<td{css}>{escape(format_value(value))}</td>")
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    legend = "".join(
        f"<li><b>{escape(METRIC_INFO[c][0])}</b>: {escape(METRIC_INFO[c][1])} ({escape(METRIC_INFO[c][2])} is better)</li>"
        if METRIC_INFO[c][2] not in ("reference",)
        else f"<li><b>{escape(METRIC_INFO[c][0])}</b>: {escape(METRIC_INFO[c][1])}</li>"
        for c in report.columns
        if c in METRIC_INFO
    )
    grid = ""
    if report.grid:
        header = "".join(f"<th>{escape(h)}</th>" for h in report.grid_header)
        rows = []
        for caption, images in report.grid:
            cells = "".join(f'<td><img src="{_image_uri(img)}" alt="{escape(caption)}"></td>' for img in images)
            rows.append(f'<tr><th class="cap">{escape(caption)}</th>{cells}</tr>')
        grid = f'<h2>Samples</h2><div class="scroll"><table class="grid"><tr><th></th>{header}</tr>{"".join(rows)}</table></div>'
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    # Figure markup comes from line_chart / html_table, which escape every text they draw.
    figures = "".join(f"<figure><figcaption>{escape(caption)}</figcaption>{markup}</figure>" for caption, markup in report.figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(report.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f4f4f4; }}
td.na {{ color: #888; font-size: 85%; text-align: left; max-width: 18em; }}
table.grid td {{ padding: 2px; border: none; }}
table.grid th {{ background: none; border: none; text-align: center; }}
th.cap {{ font-weight: normal; font-size: 85%; min-width: 8em; max-width: 16em; overflow-wrap: break-word; text-align: left; }}
img {{ display: block; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}  /* a wide table scrolls by itself, not the page */
</style></head><body>
<h1>{escape(report.title)}</h1>
<div class="scroll"><table><tr><th>checkpoint</th>{head}</tr>{''.join(body)}</table></div>
<ul>{legend}</ul>
<ul>{notes}</ul>
{figures}
{grid}
</body></html>
"""


def write_report(report: Report, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(path)
    return path
