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

An NIR checkpoint (model.target=lab / rgb, experiment=nir_pix2pix) is scored on NIR/RGB
pairs, found as training finds them (gancolor.data.nir), every pair under the folders:

    python -m gancolor.evaluate ckpt=runs/pix2pix/.../best.pt data.root=datasets/nirscene1_val
    python -m gancolor.evaluate ckpt=best.pt data.nir_root=~/nir data.rgb_root=~/rgb

data.root: NAME_nir.EXT next to NAME_rgb.EXT, any depth; data.nir_root with data.rgb_root:
the same relative names in both. A pair of two sizes, with a gray RGB or an NIR in colour
is left out (said on one line). Each NIR file goes through colorize's NIR path at its full
size (data.image_size=auto; N: both images resized to short side N first) and the result
is compared with its RGB partner, with the same metrics. All checkpoints of one call take
one kind of input; classifier= and hints.points= are for gray checkpoints.

Options (key=value; defaults in conf/evaluate.yaml): data.image_size=auto (256; NIR: full size),
data.max_images=N, max_pixels=100000000 (larger photos are skipped, from their header;
null: no limit), output=DIR, num_samples=8, render_size=N, device=auto,
precision=32|bf16, lpips.weights=auto|PATH|null, lpips.net=alex|vgg|squeeze,
fid.weights=auto|PATH|null, fid.force=false, kid.subsets=100, kid.subset_size=1000,
progress_bar=true, use_ema=true (the generators' EMA
weights where a checkpoint has them; false: the raw weights), tta=none|flip (flip: each
photo also mirrored, the two predictions averaged, as colorize's tta).

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gancolor.classify import ACCURACY_COLUMNS, ClassifierOptions, Scores, expand_shorthand, format_accuracy, labels_of, load_classifier
from gancolor.colorize import apply_temperature
from gancolor.commandline import compose_command
from gancolor.config_check import folder_problem
from gancolor.errors import ConfigError, DataError, UserError, fail
from gancolor.options import bool_option, int_option, temperature_option, tta_option

COLUMNS = [
    "psnr", "ssim", "mae", "mse", "colorfulness", "colorfulness_true", "colorfulness_ratio",
    "colorfulness_ratio_per_photo", "hist_intersection_a", "hist_intersection_b", "lpips", "fid", "kid", "kid_std",
]
PER_IMAGE = ["psnr", "ssim", "mae", "mse", "colorfulness", "colorfulness_true"]
INCEPTION_COLUMNS = ("fid", "kid", "kid_std")


AUTO = "auto"  # data.image_size=auto: GRAY_IMAGE_SIZE for photos, full size for NIR pairs (as colorize writes them)
GRAY_IMAGE_SIZE = 256


@dataclass
class Options:
    ckpts: list[Path]
    root: Path | None
    image_size: int | None | str = GRAY_IMAGE_SIZE  # or AUTO
    nir_root: Path | None = None  # NIR checkpoints: the two-folder layout of data=nir
    rgb_root: Path | None = None
    max_images: int | None = None
    max_pixels: int | None = 100_000_000  # as colorize's: larger photos are skipped, from their header
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
    tta: str = "none"
    hint_points: list[int] | None = None  # hints checkpoints: also colourise with N hints sampled from the truth, each N
    hint_locations: str = "uniform"
    hint_seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "Options":
        from gancolor.data.nir import check_layout

        raw = cfg.ckpt
        ckpts = [raw] if isinstance(raw, str) else list(raw) if raw is not None else []
        if not ckpts or not all(isinstance(c, str) and c for c in ckpts):
            raise ConfigError(f"ckpt must name one or more checkpoint files, got {raw!r}")
        precision = str(cfg.precision)
        if precision not in ("32", "bf16"):
            raise ConfigError(f"precision must be 32 or bf16, got {cfg.precision!r}")
        def weights(value) -> str | None:
            return None if value is None else str(value)

        root, nir_root, rgb_root = (_folder_option(cfg.data.get(key)) for key in ("root", "nir_root", "rgb_root"))
        if root is None and nir_root is None and rgb_root is None:
            raise ConfigError("missing argument: data.root=... (or, for an NIR checkpoint, data.nir_root=... data.rgb_root=...; see --help)")
        check_layout(root, nir_root, rgb_root)  # as training's data=nir: one layout, whole
        image_size = cfg.data.image_size
        return cls(
            ckpts=[Path(os.path.expanduser(c)) for c in ckpts],
            root=root,
            nir_root=nir_root,
            rgb_root=rgb_root,
            image_size=AUTO if image_size == AUTO else _image_size_option(image_size),
            max_images=int_option("data.max_images", cfg.data.max_images, 1, allow_none=True),
            max_pixels=int_option("max_pixels", cfg.get("max_pixels", 100_000_000), 1, allow_none=True),
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
            tta=tta_option(cfg.get("tta", "none")),
            **hint_options(cfg.get("hints")),
        )


def _image_size_option(value) -> int | None:
    try:
        return int_option("data.image_size", value, 1, allow_none=True)
    except ConfigError:
        raise ConfigError(f"data.image_size must be auto, an integer >= 1 or null, got {value!r}") from None


def _folder_option(value) -> Path | None:
    return None if value is None else Path(os.path.expanduser(str(value)))


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
    from gancolor.data.images import (
        UnreadableImage,
        allow_large_images,
        find_images,
        load_rgb,
        quiet_pillow_warnings,
        skipped_summary,
    )
    from gancolor.data.scan import scan_color_images

    _check_folder("data.root", options.root)
    note = training_split_note("data.root", options.root)
    if note:
        say(note)
    quiet_pillow_warnings()  # a damaged file gets one line, below
    allow_large_images(options.max_pixels)  # max_pixels decides, not Pillow's warning
    scan = scan_color_images(find_images(options.root), max_pixels=options.max_pixels)
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
            photos.append(resize_short_side(load_rgb(path, max_pixels=options.max_pixels), options.image_size))
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


def training_split_note(key: str, folder: Path, suggest: bool = True) -> str | None:
    """The note for a folder that holds a train/ split (training's layout): evaluate
    scores every image under it, the ones the net trained on too; `suggest`: name the
    held-out folder to give instead."""
    if not (folder / "train").is_dir():
        return None
    held = next((folder / name for name in ("val", "test") if (folder / name).is_dir()), None) if suggest else None
    where = f"; {key}={held} scores the held-out part alone" if held else ""
    return f"gancolor: note: {folder} holds train/: every image under it is scored, training images included{where}"


def _check_folder(key: str, folder: Path) -> None:
    if problem := folder_problem(key, folder):
        raise DataError(problem)  # worded as training words it


class _Decoded(Sequence):
    """Images decoded each time they are asked for, not held: a set of full-size NIR/RGB
    pairs would not fit in memory as gray evaluation's resized photos do."""

    def __init__(self, paths: list[Path], decode) -> None:
        self.paths, self.decode = paths, decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.decode(self.paths[index])


def nir_folders(options: Options) -> tuple[Path, Path | None, str]:
    """(folder of the NIR files, folder of the RGB files or None for side by side, and
    the words that name them)."""
    if options.nir_root is None:
        return options.root, None, str(options.root)
    return options.nir_root, options.rgb_root, f"{options.nir_root} and {options.rgb_root}"


def load_pairs(options: Options, say) -> tuple[list[Path], Sequence, Sequence, dict]:
    """(NIR paths, the NIR inputs, their RGB truths, what was left out) of the usable
    NIR/RGB pairs: training's pairing and rules (gancolor.data.nir), every pair under
    the folders. The images are decoded when used: the NIR as colorize decodes it (its
    stored depth), the RGB as a colour photo."""
    from gancolor.data.images import load_rgb, quiet_pillow_warnings
    from gancolor.data.nir import check_pairs, find_pairs, left_out_line, no_pairs_message, no_usable_message, unpaired_line

    nir_folder, rgb_folder, where = nir_folders(options)
    for key, folder in (("data.root", options.root), ("data.nir_root", options.nir_root), ("data.rgb_root", options.rgb_root)):
        if folder is not None:
            _check_folder(key, folder)
    # Two folders (nir_root, rgb_root) would both need their held-out part named: no suggestion.
    note = training_split_note("data.root", nir_folder, suggest=options.nir_root is None)
    if note:
        say(note)
    quiet_pillow_warnings()  # a damaged file gets one line, below
    pairs, notes = find_pairs(nir_folder, rgb_folder)
    if not pairs:
        raise DataError(f"{no_pairs_message(notes, where, side_by_side=rgb_folder is None)} (an NIR checkpoint is scored on NIR/RGB pairs)")
    if notes:
        say(f"gancolor: {unpaired_line(notes, where)}")
    checked = check_pairs(pairs)
    for path, reason in checked.unreadable:
        say(f"gancolor: skipped {path}: {reason}")
    if checked.left_out:
        say(f"gancolor: {left_out_line(checked.left_out, where)}")
    if not checked.kept:
        raise DataError(no_usable_message(checked, where))
    kept = checked.kept[: options.max_images] if options.max_images else checked.kept
    skipped = {"unpaired": notes, "left_out": [[str(p), why] for p, _, why in checked.left_out],
               "unreadable": [[str(p), reason] for p, reason in checked.unreadable]}
    partner = dict(kept)
    nir_paths = [nir for nir, _ in kept]
    inputs = _Decoded(nir_paths, lambda path: _nir_input(path, options.image_size))
    # Writable: torch warns about a read-only array (what PIL gives) made a tensor.
    truths = _Decoded(nir_paths, lambda path: np.require(resize_short_side(load_rgb(partner[path]), options.image_size), requirements="W"))
    return nir_paths, inputs, truths, skipped


def _nir_input(path: Path, size: int | None) -> np.ndarray:
    """The NIR file's pixels as colorize hands them to the Colorizer (8/16-bit, as
    stored); with a size, resized as its RGB partner is, kept 16-bit."""
    from gancolor.data.images import load_image
    from gancolor.data.nir import nir_pixels

    pixels = load_image(path).pixels
    if size is None:
        return pixels
    resized = resize_short_side(nir_pixels(pixels, path), size)
    return np.rint(np.clip(resized, 0.0, 1.0) * 65535.0).astype(np.uint16)


def input_kind(ckpts: list[Path], use_ema: bool = True) -> str:
    """"gray" or "nir": what all the checkpoints take, read before any photo is decoded;
    checkpoints of both kinds in one call are one error. Loaded with the run's `use_ema`,
    so that an ONNX export given use_ema=false is refused here, before any photo."""
    from gancolor.onnx_runtime import load_model

    kinds = {}
    for path in ckpts:
        recipe, _ = load_model(path, "cpu", use_ema=use_ema)
        kinds[path] = getattr(recipe, "input_kind", "gray")
        del recipe
    if len(set(kinds.values())) > 1:
        nir = next(p for p, k in kinds.items() if k == "nir")
        gray = next(p for p, k in kinds.items() if k != "nir")
        raise ConfigError(f"ckpt: {nir} takes NIR images and {gray} gray photos: evaluate checkpoints of one kind per call")
    return next(iter(kinds.values()))


def check_data_kind(options: Options, kind: str) -> None:
    """One line for data or options that do not suit the checkpoints' input kind."""
    first = options.ckpts[0]
    if kind == "nir":
        if options.hint_points:
            raise ConfigError(f"hints.points: {first} is an NIR checkpoint (model.target=lab / rgb), which takes no hints "
                              "(they are colour points on a gray photo); evaluate it without hints.points")
        if options.classifier:
            raise ConfigError(f"classifier: colourise-then-classify scores gray photos' colourisations; {first} is an NIR "
                              "checkpoint (model.target=lab / rgb): evaluate it without classifier=")
        return
    if options.nir_root is not None:
        raise ConfigError(f"data.nir_root / data.rgb_root give NIR/RGB pairs, for NIR checkpoints (model.target=lab / rgb); "
                          f"{first} colourises gray photos: give it data.root=DIR of colour photos")
    from gancolor.data.nir import find_pairs

    _check_folder("data.root", options.root)
    pairs, _ = find_pairs(options.root)
    if pairs:
        raise DataError(f"data.root {options.root} holds NIR/RGB pairs (e.g. {pairs[0][0].name} with {pairs[0][1].name}), "
                        f"for NIR checkpoints (model.target=lab / rgb); {first} colourises gray photos: give it a folder of colour photos")


def evaluate(options: Options, say=print) -> dict:
    """Run every checkpoint over the photos; returns what metrics.json holds."""
    from tqdm.auto import tqdm

    from gancolor.hints import TRAINED_WITHOUT_HINTS, takes_hints
    from gancolor.onnx_runtime import load_model
    from gancolor.inference import Colorizer, pick_device, run_checkpoint, trained_size
    from gancolor.metrics import (MetricUnavailable, histogram_intersection, image_metrics, load_inception_distances,
                                  load_lpips, photo_colorfulness_ratio, summarize)
    from gancolor.report import Report, write_report

    device = pick_device(options.device)
    options.ckpts = [run_checkpoint(c, say) for c in options.ckpts]  # a run folder: its best.pt, else last.pt
    output = options.output or default_output(options.ckpts)
    for ckpt in options.ckpts:
        if not ckpt.is_file():
            raise UserError(f"checkpoint not found: {ckpt}")
    kind = input_kind(options.ckpts, options.use_ema)
    check_data_kind(options, kind)
    if options.image_size == AUTO:
        options.image_size = None if kind == "nir" else GRAY_IMAGE_SIZE  # NIR: the size colorize writes
    # The classifier is checked before any photo is decoded; labels once the photos are known.
    classifier = load_classifier(options.classifier, options.root, device) if options.classifier else None
    if kind == "nir":
        # What the net is given (NIR) is not what its output is scored against (the RGB partner).
        paths, inputs, truths, skipped = load_pairs(options, say)
        base = nir_folders(options)[0]
    else:
        paths, inputs, skipped = load_photos(options, say)
        truths, base = inputs, options.root
    names = [str(p.relative_to(base)) for p in paths]
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

    samples = min(options.num_samples, len(inputs))
    grays: list[np.ndarray] = []
    outputs: list[list[np.ndarray]] = []
    results = []
    for k, ckpt_path in enumerate(options.ckpts):
        recipe, ckpt = load_model(ckpt_path, device, use_ema=options.use_ema)  # a checkpoint, or an ONNX export
        apply_temperature(recipe, options.temperature)
        render_size = options.render_size or trained_size(ckpt)
        if options.hint_points and not takes_hints(recipe):
            raise ConfigError(f"hints.points: {ckpt_path} {TRAINED_WITHOUT_HINTS}; or evaluate it without hints.points")
        colorizer = Colorizer(recipe, render_size, device, options.precision, options.tta)
        per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
        rows, shown, lpips_values = [], [], []
        started = time.perf_counter()
        bar = tqdm(inputs, desc=ckpt_path.name, unit="img", leave=False, disable=None if options.progress_bar else True)
        for i, given in enumerate(bar):
            prepared, result = _colourise_within_memory(colorizer, given, names[i], say)
            photo = truths[i]
            if kind == "nir" and photo.shape[:2] != result.shape[:2]:  # pairs agree by their headers, not after an EXIF rotation
                raise DataError(f"{names[i]}: the output is {result.shape[1]}x{result.shape[0]} but its RGB partner "
                                f"{photo.shape[1]}x{photo.shape[0]} (an EXIF rotation?)")
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
                # What the net actually ran with: use_ema=true gives a checkpoint without
                # an average its raw weights; temperature is a CIC recipe's (or export's) own.
                "uses_ema": getattr(recipe, "uses_ema", None),
                "temperature": _temperature_of(recipe),
                "seconds": round(time.perf_counter() - started, 3),
                "metrics": {c: metrics.get(c) for c in COLUMNS},
                "per_image": rows,
            }
        )
        if scores is not None:
            results[-1]["classification"] = scores.accuracy(f"ckpt{k}")
            scores.annotate(f"ckpt{k}", rows)
        if options.hint_points:
            results[-1]["hint_curve"] = hint_curve(colorizer, truths, names, options, render_size, results[-1]["metrics"], say)
        colorizer.close()
        del recipe, colorizer

    count = len(inputs)
    report = {
        "data_root": None if options.root is None else str(options.root),
        **({"nir_root": str(options.nir_root), "rgb_root": str(options.rgb_root)} if options.nir_root is not None else {}),
        "input_kind": kind,
        "num_images": count,
        "image_size": options.image_size,
        "device": str(device),
        "precision": options.precision,
        "use_ema": options.use_ema,
        "tta": options.tta,
        "temperature": options.temperature,  # null: each checkpoint's own (see checkpoints[].temperature)
        "render_size": options.render_size,  # null: each checkpoint's training resolution (checkpoints[].render_size)
        "skipped": skipped,
        "inception": inception.info if inception is not None else {"status": inception_status},
        **({"fid_forced": f"FID forced over {count} photos (fewer than 2048): biased upwards, NOT comparable with papers"}
           if inception is not None and options.fid_force and count < 2048 else {}),
        "checkpoints": results,
    }
    if scores is not None:
        report["classification"] = scores.summary(names)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(report, output / "metrics.json")

    labels = [r["ckpt"] for r in results]
    figures = [hint_curve_figure(results)] if options.hint_points else []
    what = f"{count} NIR/RGB pairs from {nir_folders(options)[2]}" if kind == "nir" else f"{count} photos from {options.root}"
    html = Report(
        title=f"gancolor evaluation: {what}",
        columns=COLUMNS + (ACCURACY_COLUMNS if scores is not None else []),
        rows=[(label, {**r["metrics"], **r.get("classification", {})}) for label, r in zip(labels, results)]
        + (scores.table_rows() if scores is not None else []),
        grid_header=[f"{'NIR' if kind == 'nir' else 'gray'} (input)",
                     *([f"output: {name}" for name in short_names(labels)] if len(labels) > 1 else ["output"]), "truth"],
        grid=[(names[i], [grays[i], *(shown[i] for shown in outputs), truths[i]]) for i in range(samples)],
        notes=_notes(options, count, skipped, report["inception"], kind) + [_settings_note(options, results)]
        + (scores.notes() if scores is not None else []),
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

    names = short_names([r["ckpt"] for r in results])
    series = {name: [(row["points"], row["psnr"]) for row in r["hint_curve"]] for name, r in zip(names, results)}
    caption = ("PSNR (dB) against the number of hints sampled from the truth (Zhang et al. 2017, fig. 4); "
               "x on a log(1 + N) scale. The table holds the other metrics at each number of hints.")
    header = ["checkpoint", "hints", *(METRIC_INFO[c][0] for c in HINT_CURVE_COLUMNS)]
    rows = [[name, str(row["points"]), *(format_value(row[c]) for c in HINT_CURVE_COLUMNS)]
            for name, r in zip(names, results) for row in r["hint_curve"]]
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


def short_names(paths: list[str]) -> list[str]:
    """The checkpoints' names for tables and charts: their last three path parts, or as many
    more as it takes to tell them apart (runs/a/checkpoints/last.pt and runs/b/...)."""
    parts = [Path(p).parts for p in paths]
    longest = max((len(x) for x in parts), default=0)
    for depth in range(3, longest + 1):
        names = [_last_parts(x, depth) for x in parts]
        if len(set(names)) == len(set(paths)):
            return names
    return [str(p) for p in paths]


def _last_parts(parts: tuple[str, ...], depth: int) -> str:
    """The last `depth` parts of a path; the whole path, with its leading / (a part of
    its own), when only that would be left out: /tmp/x/nir.onnx, not tmp/x/nir.onnx."""
    whole = Path(*parts)
    if parts[:-depth] == (whole.anchor,) and whole.anchor:
        return str(whole)
    return str(Path(*parts[-depth:]))


def _notes(options: Options, count: int, skipped: dict, inception: dict, kind: str = "gray") -> list[str]:
    from gancolor.metrics import describe_inception

    if kind == "nir":
        first = (f"{count} NIR/RGB pairs, short side {options.image_size or 'unchanged'}; outputs are the 8-bit images "
                 "colorize writes from the NIR files, compared with their RGB partners.")
    else:
        first = f"{count} photos, short side {options.image_size or 'unchanged'}; outputs are the 8-bit images colorize writes."
    notes = [
        first,
        "Histogram intersection pools the a and b values of all pixels of the set (bins one Lab unit wide).",
        "Colourfulness ratio (set): mean M of outputs / mean M of truths; ratio (per photo): the median of each "
        "photo's M(output) / M(truth).",
    ]
    if kind == "nir" and (skipped["unpaired"] or skipped["left_out"] or skipped["unreadable"]):
        notes.append(f"Not used: {len(skipped['unpaired'])} file(s) without a partner, {len(skipped['left_out'])} pair(s) "
                     f"of two sizes, with a gray RGB or an NIR in colour, {len(skipped['unreadable'])} unreadable file(s) (see metrics.json).")
    elif kind != "nir" and (skipped["grayscale"] or skipped["unreadable"]):
        gray, bad = len(skipped["grayscale"]), len(skipped["unreadable"])
        notes.append(f"Skipped: {gray} grayscale, {bad} unreadable (see metrics.json).")
    if "implementation" in inception:
        notes.append(describe_inception(inception) + ".")
        if options.fid_force and count < 2048:
            notes.append(f"FID forced over {count} photos (fewer than 2048): biased upwards, NOT comparable with papers.")
    return notes


def _temperature_of(recipe) -> float | None:
    """A CIC recipe's (or CIC export's) decoding temperature; None for other recipes."""
    try:
        return float(recipe.temperature)
    except (AttributeError, TypeError, ValueError):
        return None


def _settings_note(options: Options, results: list[dict]) -> str:
    """The decoding settings the outputs were made with, as metrics.json records them."""
    sizes = ", ".join(str(s) for s in dict.fromkeys(r["render_size"] for r in results))
    ema = [r["ckpt"] for r in results if r.get("uses_ema")]
    parts = [
        f"use_ema={'true' if options.use_ema else 'false'} (EMA weights for {len(ema)} of {len(results)} checkpoint(s))",
        f"render_size={options.render_size}" if options.render_size is not None
        else f"render_size=each checkpoint's training resolution ({sizes})",
    ]
    temperatures = [r["temperature"] for r in results if r.get("temperature") is not None]
    if options.temperature is not None:
        parts.append(f"temperature={options.temperature:g}")
    elif temperatures:
        parts.append(f"temperature=the checkpoint's ({', '.join(f'{t:g}' for t in dict.fromkeys(temperatures))})")
    return f"Settings: {', '.join(parts)}, tta={options.tta}, precision={options.precision}."


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
    names = short_names([r["ckpt"] for r in report["checkpoints"]])
    for name, r in zip(names, report["checkpoints"]):
        cells = [name]
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
    for name, r in zip(names, report["checkpoints"]):
        if "hint_curve" in r:
            out.append(f"hints sampled from the truth, {name}:")
            out.append("  ".join(["points".rjust(6), *(short.get(c, c).rjust(12) for c in HINT_CURVE_COLUMNS)]))
            for row in r["hint_curve"]:
                out.append("  ".join([str(row["points"]).rjust(6), *(f"{row[c]:.4g}".rjust(12) for c in HINT_CURVE_COLUMNS)]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = expand_shorthand(sys.argv[1:] if argv is None else argv)
    cfg = compose_command(
        "evaluate", argv,
        path_keys=frozenset({"ckpt", "data.root", "data.nir_root", "data.rgb_root", "output", "lpips.weights", "fid.weights", "classifier.weights", "classifier.classes"}),
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
