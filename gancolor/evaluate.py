"""Evaluate checkpoints on held-out colour photos with the metrics the field reports.

    python -m gancolor.evaluate ckpt=runs/pix2pix/.../checkpoints/last.pt data.root=~/val_photos
    python -m gancolor.evaluate ckpt=a.pt ckpt=b.pt data.root=~/val_photos     # comparison
    python -m gancolor.evaluate ckpt=[a.pt,b.pt] data.root=~/val_photos        # the same
    python -m gancolor.evaluate ckpt=a.pt data.root=~/val_classes classifier=resnet50 classifier.weights=~/w/resnet50.safetensors

Each photo is resized to data.image_size on its short side (null: full size), its
lightness goes through the same colourisation as `python -m gancolor.colorize`, and the
8-bit result is compared with the photo. Metrics: PSNR, SSIM, MAE, MSE, colourfulness
(Hasler & Suesstrunk 2003) of outputs and truth and their ratio, histogram
intersection of the a and b distributions, and LPIPS, FID and KID when their backbone
weights are on disk (lpips.weights=PATH, fid.weights=PATH; never downloaded; otherwise
the column reads "unavailable: ..."). FID and KID compare with papers with the
TF-Inception file (weights-inception-2015-12-05-6726825d.pth); FID needs at least 2048
photos unless fid.force=true. Validation during training uses the same functions
(gancolor.metrics).

Options (key=value; defaults in conf/evaluate.yaml): data.image_size=256,
data.max_images=N, output=DIR, num_samples=8, render_size=N, device=auto,
precision=32|bf16, lpips.weights=auto|PATH|null, lpips.net=alex|vgg|squeeze,
fid.weights=auto|PATH|null, fid.force=false, kid.subsets=100, kid.subset_size=1000,
progress_bar=true, use_ema=true (the generators' EMA
weights where a checkpoint has them; false: the raw weights).

Colourise-then-classify (gancolor.classify): with classifier=NAME (a timm model) and
classifier.weights=PATH, data.root in class-folder layout (DIR/<class>/<images>), the
classifier's top-1 / top-5 accuracy on the gray images, on each checkpoint's
colourisation and on the originals is added. Options: classifier.classes=auto|PATH,
classifier.image_size, classifier.crop_pct, classifier.mean, classifier.std,
classifier.interpolation, classifier.batch_size (null: timm's defaults for the model).

Hints (a checkpoint trained with model.hints): with hints.points=[0,1,2,5,10,20,50] each
photo is also colourised with N hints sampled from its own colours, for every N (the
metrics-vs-points curve of Zhang et al. 2017, fig. 4), each hint the mean colour of the
square the net sees as one point, at locations drawn uniformly (hints.locations=gaussian:
around the centre, as in training) from a fixed seed (hints.seed=0), the same first points
for every N. The curve is in metrics.json, the terminal table and, plotted, the report.

Writes metrics.json and report.html to output (default: <run folder>/eval for one
checkpoint, ./eval for several). Exit status 0, or 2 with one line for a bad argument.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gancolor.classify import ACCURACY_COLUMNS, ClassifierOptions, Scores, expand_shorthand, format_accuracy, labels_of, load_classifier
from gancolor.colorize import apply_temperature
from gancolor.commandline import compose_command
from gancolor.errors import ConfigError, DataError, UserError, fail
from gancolor.options import bool_option, int_option, temperature_option

COLUMNS = [
    "psnr", "ssim", "mae", "mse", "colorfulness", "colorfulness_true", "colorfulness_ratio",
    "colorfulness_ratio_per_photo", "hist_intersection_a", "hist_intersection_b", "lpips", "fid", "kid", "kid_std",
]
PER_IMAGE = ["psnr", "ssim", "mae", "mse", "colorfulness", "colorfulness_true"]
INCEPTION_COLUMNS = ("fid", "kid", "kid_std")


@dataclass
class Options:
    ckpts: list[Path]
    root: Path
    image_size: int | None = 256
    max_images: int | None = None
    output: Path | None = None
    num_samples: int = 8
    render_size: int | None = None
    device: str = "auto"
    precision: str = "32"
    progress_bar: bool = True
    lpips_weights: str | None = "auto"
    lpips_net: str = "alex"
    fid_weights: str | None = "auto"
    fid_force: bool = False
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    temperature: float | None = None
    classifier: ClassifierOptions | None = None  # colourise-then-classify (gancolor.classify)
    use_ema: bool = True
    hint_points: list[int] | None = None  # hints checkpoints: also colourise with N hints sampled from the truth, each N
    hint_locations: str = "uniform"
    hint_seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "Options":
        raw = cfg.ckpt
        ckpts = [raw] if isinstance(raw, str) else list(raw) if raw is not None else []
        if not ckpts or not all(isinstance(c, str) and c for c in ckpts):
            raise ConfigError(f"ckpt must name one or more checkpoint files, got {raw!r}")
        precision = str(cfg.precision)
        if precision not in ("32", "bf16"):
            raise ConfigError(f"precision must be 32 or bf16, got {cfg.precision!r}")
        def weights(value) -> str | None:
            return None if value is None else str(value)

        return cls(
            ckpts=[Path(os.path.expanduser(c)) for c in ckpts],
            root=Path(os.path.expanduser(str(cfg.data.root))),
            image_size=int_option("data.image_size", cfg.data.image_size, 1, allow_none=True),
            max_images=int_option("data.max_images", cfg.data.max_images, 1, allow_none=True),
            output=None if cfg.output is None else Path(os.path.expanduser(str(cfg.output))),
            num_samples=int_option("num_samples", cfg.num_samples, 0),
            render_size=int_option("render_size", cfg.render_size, 1, allow_none=True),
            device=str(cfg.device),
            precision=precision,
            progress_bar=bool_option("progress_bar", cfg.progress_bar),
            lpips_weights=weights(cfg.lpips.weights),
            lpips_net=str(cfg.lpips.net),
            fid_weights=weights(cfg.fid.weights),
            fid_force=bool_option("fid.force", cfg.fid.force),
            kid_subsets=int_option("kid.subsets", cfg.kid.subsets, 1),
            kid_subset_size=int_option("kid.subset_size", cfg.kid.subset_size, 2),
            temperature=temperature_option(cfg.get("temperature")),
            classifier=ClassifierOptions.from_config(cfg.get("classifier")),
            use_ema=bool_option("use_ema", cfg.get("use_ema", True)),
            **hint_options(cfg.get("hints")),
        )


def hint_options(node) -> dict:
    """hints.points / hints.locations / hints.seed -> Options fields."""
    from gancolor.hints import LOCATIONS

    if node is None or node.get("points") is None:
        return {}
    raw = node.get("points")
    raw = [raw] if isinstance(raw, int) else raw
    try:
        points = sorted({int_option("hints.points", n, 0) for n in raw})
    except TypeError:
        raise ConfigError(f"hints.points must be a list of hint counts >= 0, e.g. [0,1,2,5,10], got {raw!r}") from None
    if not points:
        raise ConfigError("hints.points is empty: give the hint counts, e.g. hints.points=[0,1,2,5,10]")
    locations = str(node.get("locations", "uniform"))
    if locations not in LOCATIONS:
        raise ConfigError(f"hints.locations must be one of {', '.join(LOCATIONS)}, got {locations!r}")
    return {"hint_points": points, "hint_locations": locations, "hint_seed": int_option("hints.seed", node.get("seed", 0), 0)}


def default_output(ckpts: list[Path]) -> Path:
    """<run folder>/eval for one checkpoint (runs/<model>/<date>/checkpoints/x.pt), else ./eval."""
    if len(ckpts) == 1:
        parent = ckpts[0].resolve().parent
        return (parent.parent if parent.name == "checkpoints" else parent) / "eval"
    return Path("eval")


def resize_short_side(rgb: np.ndarray, size: int | None) -> np.ndarray:
    """Short side to `size`, aspect kept; area averaging when shrinking (as training)."""
    if size is None:
        return rgb
    height, width = rgb.shape[:2]
    scale = size / min(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    if shape == (width, height):
        return rgb
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize(shape, method))


def load_photos(options: Options, say) -> tuple[list[Path], list[np.ndarray], dict]:
    """The usable colour photos under data.root, decoded once for every checkpoint."""
    from gancolor.data.images import UnreadableImage, find_images, load_rgb, quiet_pillow_warnings, skipped_summary
    from gancolor.data.scan import scan_color_images

    if not options.root.exists():
        raise DataError(f"data.root not found: {options.root}")
    if not options.root.is_dir():
        raise DataError(f"data.root is not a folder: {options.root}")
    quiet_pillow_warnings()  # a damaged file gets one line, below
    scan = scan_color_images(find_images(options.root))
    skipped = {"grayscale": [str(p) for p in scan.grayscale], "unreadable": [[str(p), r] for p, r in scan.unreadable],
               "unsupported": [[str(p), r] for p, r in scan.unsupported]}
    for path, reason in scan.unreadable:
        say(f"gancolor: skipped {path}: {reason}")
    if scan.grayscale:
        say(f"gancolor: {len(scan.grayscale)} grayscale photo(s) skipped (no colour to compare with)")
    if scan.animated:
        say(f"gancolor: note: {len(scan.animated)} animated image(s): the first frame of each is compared")
    paths, photos = [], []
    passed_over = list(scan.skipped)
    for path in scan.good[: options.max_images] if options.max_images else scan.good:
        try:
            photos.append(resize_short_side(load_rgb(path), options.image_size))
            paths.append(path)
        except UnreadableImage as exc:  # changed since the scan
            skipped["unreadable"].append([str(path), exc.reason])
            passed_over.append((path, exc.kind))
            say(f"gancolor: skipped {path}: {exc.reason}")
    if passed_over:
        say(f"gancolor: {skipped_summary(passed_over)}")
    if not photos:
        raise DataError(f"no usable colour photos under {options.root} ({scan.summary()})")
    return paths, photos, skipped


def evaluate(options: Options, say=print) -> dict:
    """Run every checkpoint over the photos; returns what metrics.json holds."""
    from tqdm.auto import tqdm

    from gancolor.hints import takes_hints
    from gancolor.onnx_runtime import load_model
    from gancolor.inference import Colorizer, pick_device, run_checkpoint, trained_size
    from gancolor.models.base import check_gray_input
    from gancolor.metrics import (MetricUnavailable, histogram_intersection, image_metrics, load_inception_distances,
                                  load_lpips, photo_colorfulness_ratio, summarize)
    from gancolor.report import Report, write_report

    device = pick_device(options.device)
    options.ckpts = [run_checkpoint(c, say) for c in options.ckpts]  # a run folder: its best.pt, else last.pt
    output = options.output or default_output(options.ckpts)
    for ckpt in options.ckpts:
        if not ckpt.is_file():
            raise UserError(f"checkpoint not found: {ckpt}")
    # The classifier is checked before any photo is decoded; labels once the photos are known.
    classifier = load_classifier(options.classifier, options.root, device) if options.classifier else None
    paths, photos, skipped = load_photos(options, say)
    names = [str(p.relative_to(options.root)) for p in paths]
    scores = Scores(classifier, labels_of(paths, options.root, classifier.classes)) if classifier else None

    lpips = inception = None
    lpips_status = inception_status = None
    try:
        lpips = load_lpips(options.lpips_weights, options.lpips_net).to(device)
    except MetricUnavailable as exc:
        lpips_status = str(exc)
    try:
        inception = load_inception_distances(options.fid_weights, fid_force=options.fid_force,
                                             kid_subsets=options.kid_subsets,
                                             kid_subset_size=options.kid_subset_size).to(device)
    except MetricUnavailable as exc:
        inception_status = str(exc)

    samples = min(options.num_samples, len(photos))
    grays: list[np.ndarray] = []
    outputs: list[list[np.ndarray]] = []
    results = []
    for k, ckpt_path in enumerate(options.ckpts):
        recipe, ckpt = load_model(ckpt_path, device, use_ema=options.use_ema)  # a checkpoint, or an ONNX export
        check_gray_input(recipe, "evaluate", "it scores colourised gray photos, and an NIR model's scores are its "
                         "val/ metrics on NIR/RGB pairs in the run's metrics.jsonl")
        apply_temperature(recipe, options.temperature)
        render_size = options.render_size or trained_size(ckpt)
        if options.hint_points and not takes_hints(recipe):
            raise ConfigError(f"hints.points: {ckpt_path} was trained without hints (model.hints); evaluate it without hints.points")
        colorizer = Colorizer(recipe, render_size, device, options.precision)
        per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
        rows, shown, lpips_values = [], [], []
        started = time.perf_counter()
        bar = tqdm(photos, desc=ckpt_path.name, unit="img", leave=False, disable=None if options.progress_bar else True)
        for i, photo in enumerate(bar):
            prepared, result = _colourise_within_memory(colorizer, photo, names[i], say)
            gray = colorizer.gray(prepared) if k == 0 and (i < samples or scores is not None) else None
            if i < samples:
                shown.append(result)
                if k == 0:
                    grays.append(gray)
            if scores is not None:
                if k == 0:
                    scores.add("gray", i, gray)
                    scores.add("original", i, photo)
                scores.add(f"ckpt{k}", i, result)
            pred = _to_tensor(result, device)
            truth = _to_tensor(photo, device)
            values = image_metrics(pred, truth)
            for name, value in values.items():
                per_image[name].append(value.cpu())
            row = {"path": names[i], **{m: float(values[m][0]) for m in PER_IMAGE}}
            row["colorfulness_ratio"] = float(photo_colorfulness_ratio(values["colorfulness"], values["colorfulness_true"])[0])
            a, b = histogram_intersection(values["ab_hist"], values["ab_hist_true"])[0].tolist()
            row["hist_intersection_a"], row["hist_intersection_b"] = a, b
            if lpips is not None:
                row["lpips"] = float(lpips(pred, truth)[0])
                lpips_values.append(row["lpips"])
            if inception is not None:
                if k == 0:
                    inception.update(truth, real=True)  # kept for every checkpoint
                inception.update(pred, real=False)
            rows.append(row)
        bar.close()
        metrics = summarize(per_image)
        metrics["lpips"] = float(np.mean(lpips_values)) if lpips is not None else lpips_status
        metrics.update(inception.compute() if inception is not None else dict.fromkeys(INCEPTION_COLUMNS, inception_status))
        outputs.append(shown)
        results.append(
            {
                "ckpt": str(ckpt_path),
                "recipe": ckpt.get("recipe"),
                "epoch": ckpt.get("epoch"),
                "global_step": ckpt.get("global_step"),
                "render_size": render_size,
                "seconds": round(time.perf_counter() - started, 3),
                "metrics": {c: metrics.get(c) for c in COLUMNS},
                "per_image": rows,
            }
        )
        if scores is not None:
            results[-1]["classification"] = scores.accuracy(f"ckpt{k}")
            scores.annotate(f"ckpt{k}", rows)
        if options.hint_points:
            results[-1]["hint_curve"] = hint_curve(colorizer, photos, names, options, render_size, results[-1]["metrics"], say)
        colorizer.close()
        del recipe, colorizer

    report = {
        "data_root": str(options.root),
        "num_images": len(photos),
        "image_size": options.image_size,
        "device": str(device),
        "precision": options.precision,
        "skipped": skipped,
        "inception": inception.info if inception is not None else {"status": inception_status},
        **({"fid_forced": f"FID forced over {len(photos)} photos (fewer than 2048): biased upwards, NOT comparable with papers"}
           if inception is not None and options.fid_force and len(photos) < 2048 else {}),
        "checkpoints": results,
    }
    if scores is not None:
        report["classification"] = scores.summary(names)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(report, output / "metrics.json")

    labels = [r["ckpt"] for r in results]
    figures = [hint_curve_figure(results)] if options.hint_points else []
    html = Report(
        title=f"gancolor evaluation: {len(photos)} photos from {options.root}",
        columns=COLUMNS + (ACCURACY_COLUMNS if scores is not None else []),
        rows=[(label, {**r["metrics"], **r.get("classification", {})}) for label, r in zip(labels, results)]
        + (scores.table_rows() if scores is not None else []),
        grid_header=["gray (input)", *([f"output: {_short(l)}" for l in labels] if len(labels) > 1 else ["output"]), "truth"],
        grid=[(names[i], [grays[i], *(shown[i] for shown in outputs), photos[i]]) for i in range(samples)],
        notes=_notes(options, len(photos), skipped, report["inception"]) + (scores.notes() if scores is not None else []),
        figures=figures,
    )
    write_report(html, output / "report.html")
    report["output"] = str(output)
    return report


HINT_CURVE_COLUMNS = ["psnr", "ssim", "mae", "colorfulness_ratio", "colorfulness_ratio_per_photo", "hist_intersection_a", "hist_intersection_b"]


def hint_curve(colorizer, photos: list[np.ndarray], names: list[str], options: Options, render_size: int, automatic: dict, say) -> list[dict]:
    """The metrics with N hints sampled from each photo's truth, for each N of hints.points.
    N = 0 is the automatic pass already scored (`automatic`)."""
    from gancolor.hints import POINT_PATCH, truth_hints
    from gancolor.metrics import image_metrics, summarize

    curve = []
    for count in options.hint_points:
        if count == 0:
            curve.append({"points": 0, **{c: automatic[c] for c in HINT_CURVE_COLUMNS}})
            continue
        per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
        for i, photo in enumerate(photos):
            # One hint is a POINT_PATCH px square at the net's size: that much of the photo gives its colour.
            patch = max(1, round(POINT_PATCH * min(photo.shape[:2]) / render_size))
            rng = np.random.default_rng([options.hint_seed, i])
            hints = truth_hints(photo, count, rng, patch, options.hint_locations)
            _, result = _colourise_within_memory(colorizer, photo, names[i], say, hints)
            for key, value in image_metrics(_to_tensor(result, colorizer.device), _to_tensor(photo, colorizer.device)).items():
                per_image[key].append(value.cpu())
        metrics = summarize(per_image)
        curve.append({"points": count, **{c: metrics[c] for c in HINT_CURVE_COLUMNS}})
    return curve


def hint_curve_figure(results: list[dict]) -> tuple[str, str]:
    """(caption, SVG) of PSNR against the number of hints, one line per checkpoint."""
    from gancolor.report import line_chart

    from gancolor.report import METRIC_INFO, format_value, html_table

    series = {_short(r["ckpt"]): [(row["points"], row["psnr"]) for row in r["hint_curve"]] for r in results}
    caption = ("PSNR (dB) against the number of hints sampled from the truth (Zhang et al. 2017, fig. 4); "
               "x on a log(1 + N) scale. The table holds the other metrics at each number of hints.")
    header = ["checkpoint", "hints", *(METRIC_INFO[c][0] for c in HINT_CURVE_COLUMNS)]
    rows = [[_short(r["ckpt"]), str(row["points"]), *(format_value(row[c]) for c in HINT_CURVE_COLUMNS)]
            for r in results for row in r["hint_curve"]]
    chart = line_chart(series, x_label="hints per photo", y_label="PSNR (dB)", log_x=True)
    return caption, chart + html_table(header, rows)


def _colourise_within_memory(colorizer, photo: np.ndarray, name: str, say, hints=None):
    """(prepared, result) of one photo; where the device runs out of memory, the photo
    goes to the CPU (said once per photo). Never an uncoloured result in its place: a
    photo that fits nowhere ends the evaluation with one line."""
    warned: list[str] = []

    def warn(message: str) -> None:
        if not warned:
            say(f"gancolor: warning: {name}: {message}")
        warned.append(message)

    try:
        prepared = colorizer.prepare_within_memory(photo, None, warn, hints)
        ab = colorizer.predict_within_memory([prepared.small], warn, [prepared.hints])[0]
        if ab is not None:
            return prepared, colorizer.finish_within_memory(prepared, ab, warn)
    except torch.OutOfMemoryError:
        pass
    raise UserError(f"out of memory colourising {name}, even on the CPU: lower data.image_size")


def _to_tensor(rgb: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def _short(label: str) -> str:
    path = Path(label)
    return str(Path(*path.parts[-3:])) if len(path.parts) > 3 else label


def _notes(options: Options, count: int, skipped: dict, inception: dict) -> list[str]:
    from gancolor.metrics import describe_inception

    notes = [
        f"{count} photos, short side {options.image_size or 'unchanged'}; outputs are the 8-bit images colorize writes.",
        "Histogram intersection pools the a and b values of all pixels of the set (bins one Lab unit wide).",
        "Colourfulness ratio (set): mean M of outputs / mean M of truths; ratio (per photo): the median of each "
        "photo's M(output) / M(truth).",
    ]
    if skipped["grayscale"] or skipped["unreadable"]:
        gray, bad = len(skipped["grayscale"]), len(skipped["unreadable"])
        notes.append(f"Skipped: {gray} grayscale, {bad} unreadable (see metrics.json).")
    if "implementation" in inception:
        notes.append(describe_inception(inception) + ".")
        if options.fid_force and count < 2048:
            notes.append(f"FID forced over {count} photos (fewer than 2048): biased upwards, NOT comparable with papers.")
    return notes


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def format_table(report: dict) -> str:
    """The comparison table for the terminal; unavailable metrics read n/a."""
    short = {"colorfulness": "colourful", "colorfulness_true": "truth", "colorfulness_ratio": "ratio(set)",
             "colorfulness_ratio_per_photo": "ratio(photo)", "hist_intersection_a": "HI a", "hist_intersection_b": "HI b",
             "kid_std": "kid sd"}
    heads = ["checkpoint"] + [short.get(c, c) for c in COLUMNS]
    lines = []
    for r in report["checkpoints"]:
        cells = [_short(r["ckpt"])]
        for c in COLUMNS:
            v = r["metrics"].get(c)
            cells.append("n/a" if isinstance(v, str) or v is None else f"{v:.4g}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [heads, *lines]) for i in range(len(heads))]

    def fmt(row: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    out = [fmt(heads), *(fmt(row) for row in lines)]
    out.append("ratio(set): mean colourfulness of outputs / of truths; ratio(photo): median over photos of output / truth")
    first = report["checkpoints"][0]["metrics"]
    for c in ("lpips", "fid", "kid"):
        if isinstance(first.get(c), str):
            out.append(f"{c}: {first[c]}")
    if "implementation" in report.get("inception", {}):
        from gancolor.metrics import describe_inception

        out.append(describe_inception(report["inception"]))
    if "fid_forced" in report:
        out.append(report["fid_forced"])
    for r in report["checkpoints"]:
        if "hint_curve" in r:
            out.append(f"hints sampled from the truth, {_short(r['ckpt'])}:")
            out.append("  ".join(["points".rjust(6), *(short.get(c, c).rjust(12) for c in HINT_CURVE_COLUMNS)]))
            for row in r["hint_curve"]:
                out.append("  ".join([str(row["points"]).rjust(6), *(f"{row[c]:.4g}".rjust(12) for c in HINT_CURVE_COLUMNS)]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = expand_shorthand(sys.argv[1:] if argv is None else argv)
    cfg = compose_command(
        "evaluate", argv,
        path_keys=frozenset({"ckpt", "data.root", "output", "lpips.weights", "fid.weights", "classifier.weights", "classifier.classes"}),
        list_keys=frozenset({"ckpt"}),
        usage=__doc__ or "",
    )
    try:
        options = Options.from_config(cfg)
        report = evaluate(options, say=lambda m: print(m, file=sys.stderr, flush=True))
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    print(format_table(report))
    if "classification" in report:
        print(format_accuracy(report))
    print(f"gancolor: wrote {Path(report['output']) / 'metrics.json'} and report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
