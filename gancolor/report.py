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
    "ssim": ("SSIM", "structural similarity (torchmetrics, 11x11 Gaussian window)", "higher"),
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
        grid = f'<h2>Samples</h2><table class="grid"><tr><th></th>{header}</tr>{"".join(rows)}</table>'
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
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
th.cap {{ font-weight: normal; font-size: 85%; max-width: 12em; word-break: break-all; text-align: left; }}
img {{ display: block; }}
</style></head><body>
<h1>{escape(report.title)}</h1>
<table><tr><th>checkpoint</th>{head}</tr>{''.join(body)}</table>
<ul>{legend}</ul>
<ul>{notes}</ul>
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
