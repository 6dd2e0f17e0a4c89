"""Colourise-then-classify: does colourisation give a colour-trained classifier back
what the gray images took away? (Zhang et al. 2016, sec. 3.2: an ImageNet classifier
scores lower on gray images than on the originals, and colourising the gray images
first wins part of it back.)

    python -m gancolor.evaluate ckpt=best.pt data.root=~/val classifier=resnet50 classifier.weights=~/w/resnet50.safetensors

`python -m gancolor.evaluate` calls this module when `classifier.name` is set (the
command line's `classifier=NAME` is a shorthand for it). The same classifier then sees
each photo three ways: gray (the lightness the colouriser is given, as a gray RGB
image), colourised by each checkpoint, and the original; top-1 and top-5 accuracy of
each go to metrics.json and the HTML report.

- The classifier is `timm.create_model(name, pretrained=False, num_classes=len(classes))`
  with the weights of a local file (safetensors, or a torch state dict loaded with
  weights_only=True; read and fitted by gancolor.nets.weights, so prefixes and wrappers
  are handled and a file made for another net is one line naming what differs).
- data.root is in class-folder layout, as torchvision's ImageFolder: DIR/<class>/<images>;
  a photo's class is its first folder under DIR.
- Class names, in the order of the classifier's outputs: classifier.classes=PATH (a text
  file, one name a line), or with `auto` a `classes.txt` beside the weights file, or
  without one the class folders of data.root sorted by name: the order ImageFolder gives
  a classifier trained on the same folders. That last guess cannot be checked beyond the
  number of outputs, so metrics.json says where the names came from.
- Preprocessing is timm's for the model (resolve_data_config + create_transform, eval
  mode: resize, centre crop, normalisation), each part overridable by an option.
- Accuracy is torchmetrics' MulticlassAccuracy, micro-averaged (the fraction of photos
  right). Top-5 only with more than 5 classes: with 5 or fewer it is 1 by construction,
  so it is reported as null.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gancolor.config_check import folder_problem
from gancolor.errors import CheckpointError, ConfigError, DataError, one_line
from gancolor.options import int_option

ACCURACY_COLUMNS = ["top1", "top5"]
TOP5_MIN_CLASSES = 6
CLASSES_FILE = "classes.txt"  # beside the weights, read when classifier.classes=auto
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# Row labels of the HTML table, beside the checkpoints' (colourised) rows.
RENDERINGS = {"gray": "gray (classifier input without colour)", "original": "original photos"}


def expand_shorthand(argv: list[str]) -> list[str]:
    """`classifier=NAME` -> `classifier.name=NAME`: the short form users type; in the
    config `classifier` is a node that also holds weights, classes and preprocessing."""
    return [f"classifier.name={arg.partition('=')[2]}" if arg.startswith("classifier=") else arg for arg in argv]


@dataclass
class ClassifierOptions:
    name: str
    weights: Path
    classes: Path | None = None  # None: auto
    image_size: int | None = None
    crop_pct: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    batch_size: int = 32

    @classmethod
    def from_config(cls, node) -> "ClassifierOptions | None":
        """None when no classifier is asked for; a missing weights file is refused here,
        before any photo is read."""
        if node is None or node.get("name") is None:
            if node is not None and node.get("weights") is not None:
                raise ConfigError("classifier.weights needs classifier=NAME (the timm model the weights are for)")
            return None
        name = node.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"classifier must be a timm model name, got {name!r}")
        if node.get("weights") is None:
            raise ConfigError(f"classifier={name} needs classifier.weights=PATH (a local weights file; nothing is downloaded)")
        from gancolor.nets.weights import weights_file

        weights = weights_file(str(node.weights), "classifier.weights")
        classes = str(node.get("classes", "auto"))
        return cls(
            name=name,
            weights=weights,
            classes=None if classes == "auto" else Path(os.path.expanduser(classes)),
            image_size=int_option("classifier.image_size", node.get("image_size"), 1, allow_none=True),
            crop_pct=_fraction("classifier.crop_pct", node.get("crop_pct")),
            mean=_triple("classifier.mean", node.get("mean")),
            std=_triple("classifier.std", node.get("std"), positive=True),
            interpolation=_interpolation(node.get("interpolation")),
            batch_size=int_option("classifier.batch_size", node.get("batch_size", 32), 1),
        )


def _fraction(key: str, value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0 < number <= 1:
        raise ConfigError(f"{key} must be a number in (0, 1] or null, got {value!r}")
    return number


def _triple(key: str, value, positive: bool = False) -> tuple[float, ...] | None:
    """Per-channel numbers: [r, g, b], or one number for all three."""
    if value is None:
        return None
    values = list(value) if not isinstance(value, (str, int, float)) else [value]
    try:
        numbers = tuple(float(v) for v in values if not isinstance(v, bool))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != len(values) or len(numbers) not in (1, 3) or (positive and min(numbers) <= 0):
        raise ConfigError(f"{key} must be [r,g,b] or one number{' > 0' if positive else ''}, or null, got {value!r}")
    return numbers * 3 if len(numbers) == 1 else numbers


def _interpolation(value) -> str | None:
    if value is None:
        return None
    if value not in INTERPOLATIONS:
        raise ConfigError(f"classifier.interpolation must be one of {', '.join(INTERPOLATIONS)} or null, got {value!r}")
    return value


# -- classes ---------------------------------------------------------------------------------
@dataclass
class Classes:
    names: list[str]
    source: str  # where the names came from, said in metrics.json and the report


def class_folders(root: Path) -> list[str]:
    """The class folders of an ImageFolder tree (hidden ones left out, as hidden files are)."""
    if problem := folder_problem("data.root", root):
        raise DataError(problem)
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise DataError(f"data.root has no class subfolders: {root} (a classifier needs DIR/<class>/<images>, the ImageFolder layout)")
    return folders


def read_classes(options: ClassifierOptions, root: Path) -> Classes:
    """The classifier's class names, in the order of its outputs (see the module doc)."""
    folders = class_folders(root)
    file = options.classes or options.weights.parent / CLASSES_FILE
    if options.classes is None and not file.is_file():
        return Classes(folders, f"the class folders of {root}, sorted by name (torchvision ImageFolder's order)")
    if not file.is_file():
        raise ConfigError(f"classifier.classes: file not found: {file}")
    try:
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"classifier.classes: cannot read {file}: {one_line(exc)}") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"classifier.classes: {file} names a class twice: {', '.join(repeated[:5])}")
    if len(names) < 2:
        raise ConfigError(f"classifier.classes: {file} lists {len(names)} class(es); a classifier needs at least 2")
    return Classes(names, str(file))


def labels_of(paths: list[Path], root: Path, classes: Classes) -> list[int]:
    """Each photo's class index, from its first folder under data.root."""
    outside = [p for p in paths if len(p.relative_to(root).parts) < 2]
    if outside:
        raise DataError(
            f"{len(outside)} photo(s) directly in data.root, outside any class folder (e.g. {outside[0]}): "
            "a classifier needs DIR/<class>/<images>, the ImageFolder layout"
        )
    index = {name: i for i, name in enumerate(classes.names)}
    unknown = sorted({p.relative_to(root).parts[0] for p in paths} - set(index))
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{len(unknown)} class folder(s) of data.root the classifier does not know: {shown} "
            f"(its {len(classes.names)} classes are from {classes.source})"
        )
    return [index[p.relative_to(root).parts[0]] for p in paths]


# -- the classifier ----------------------------------------------------------------------------
@dataclass
class Classifier:
    options: ClassifierOptions
    classes: Classes
    model: torch.nn.Module
    transform: object  # PIL image -> normalised (3, H, W) tensor
    data_config: dict
    device: torch.device


def load_classifier(options: ClassifierOptions, root: Path, device: torch.device) -> Classifier:
    """Build the timm model, load its weights and its preprocessing: every mistake here
    is one line, before a photo is decoded."""
    import timm
    from timm.data import create_transform, resolve_data_config

    from gancolor.nets.weights import fit_state_dict, read_state_dict

    if not timm.is_model(options.name):
        near = difflib.get_close_matches(options.name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else " (see timm.list_models())"
        raise ConfigError(f"classifier: timm has no model {options.name!r}{hint}")
    classes = read_classes(options, root)
    state = read_state_dict(options.weights, "classifier.weights", encoder=False)
    try:
        model = timm.create_model(options.name, pretrained=False, num_classes=len(classes.names))
    except Exception as exc:  # noqa: BLE001 - whatever a model's constructor refuses
        raise ConfigError(f"classifier: cannot build {options.name}: {one_line(exc)}") from None
    try:
        fitted = fit_state_dict(model, state, f"classifier.weights: {options.weights}", f"timm model {options.name}")
    except CheckpointError as exc:
        # A head of another size is the usual cause: say how many classes were assumed, and why.
        raise CheckpointError(f"{exc} (built with {len(classes.names)} classes, from {classes.source})") from None
    model.load_state_dict(fitted)
    asked = {
        "img_size": options.image_size, "crop_pct": options.crop_pct, "mean": options.mean,
        "std": options.std, "interpolation": options.interpolation,
    }
    data_config = resolve_data_config({k: v for k, v in asked.items() if v is not None}, model=model)
    transform = create_transform(**data_config, is_training=False)
    return Classifier(options, classes, model.to(device).eval(), transform, data_config, device)


# -- scoring -----------------------------------------------------------------------------------
@dataclass
class _Rendering:
    """The photos of one rendering (gray, one checkpoint's colours, originals) seen so far."""

    top1: object
    top5: object | None
    pending: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    predicted: dict[int, int] = field(default_factory=dict)


class Scores:
    """Accuracy of one classifier on several renderings of the same labelled photos.

        scores.add("gray", i, rgb)   # any key: "gray", "original", one per checkpoint
        scores.accuracy("gray")      # {"top1": ..., "top5": ... or None}

    Photos are classified in batches of classifier.batch_size as they come, so only a
    batch of preprocessed tensors is held at a time.
    """

    def __init__(self, classifier: Classifier, labels: list[int]) -> None:
        self.classifier = classifier
        self.labels = labels
        self.renderings: dict[str, _Rendering] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classifier.classes.names)

    def add(self, key: str, index: int, rgb: np.ndarray) -> None:
        from PIL import Image

        rendering = self.renderings.get(key) or self._start(key)
        rendering.pending.append((index, self.classifier.transform(Image.fromarray(rgb[..., :3]))))
        if len(rendering.pending) >= self.classifier.options.batch_size:
            self._flush(rendering)

    def _start(self, key: str) -> _Rendering:
        from torchmetrics.classification import MulticlassAccuracy

        def accuracy(k: int):
            return MulticlassAccuracy(num_classes=self.num_classes, top_k=k, average="micro")

        rendering = _Rendering(accuracy(1), accuracy(5) if self.num_classes >= TOP5_MIN_CLASSES else None)
        self.renderings[key] = rendering
        return rendering

    @torch.no_grad()
    def _flush(self, rendering: _Rendering) -> None:
        if not rendering.pending:
            return
        indices = [i for i, _ in rendering.pending]
        batch = torch.stack([t for _, t in rendering.pending]).to(self.classifier.device)
        logits = self.classifier.model(batch).float().cpu()
        target = torch.tensor([self.labels[i] for i in indices])
        for metric in (rendering.top1, rendering.top5):
            if metric is not None:
                metric.update(logits, target)
        rendering.predicted.update(zip(indices, logits.argmax(1).tolist()))
        rendering.pending.clear()

    def accuracy(self, key: str) -> dict[str, float | None]:
        rendering = self.renderings[key]
        self._flush(rendering)
        return {
            "top1": float(rendering.top1.compute()),
            "top5": float(rendering.top5.compute()) if rendering.top5 is not None else None,
        }

    def predictions(self, key: str) -> list[str]:
        """The top-1 class name of each photo, in the order of the photos."""
        rendering = self.renderings[key]
        self._flush(rendering)
        return [self.classifier.classes.names[rendering.predicted[i]] for i in range(len(self.labels))]

    # -- what evaluate writes ------------------------------------------------------------------
    def summary(self, names: list[str]) -> dict:
        """metrics.json's `classification`: the classifier, its classes and preprocessing,
        and the accuracy on the gray images and on the originals (each checkpoint's
        colourised accuracy is in its own entry)."""
        classifier = self.classifier
        config = classifier.data_config
        gray, original = self.predictions("gray"), self.predictions("original")
        truth = [classifier.classes.names[label] for label in self.labels]
        return {
            "classifier": classifier.options.name,
            "weights": str(classifier.options.weights),
            "classes": classifier.classes.names,
            "classes_from": classifier.classes.source,
            "num_classes": self.num_classes,
            "chance": 1.0 / self.num_classes,
            "top5_reported": self.num_classes >= TOP5_MIN_CLASSES,  # top-5 of 5 or fewer classes is 1 by construction
            "preprocessing": {
                "input_size": list(config["input_size"]), "crop_pct": config["crop_pct"],
                "interpolation": config["interpolation"], "mean": list(config["mean"]), "std": list(config["std"]),
            },
            "gray": self.accuracy("gray"),
            "original": self.accuracy("original"),
            "per_image": [
                {"path": n, "class": t, "gray": g, "original": o} for n, t, g, o in zip(names, truth, gray, original)
            ],
        }

    def annotate(self, key: str, rows: list[dict]) -> None:
        """Each checkpoint's per-image rows get the true class and the colourised prediction."""
        for row, label, predicted in zip(rows, self.labels, self.predictions(key)):
            row["class"] = self.classifier.classes.names[label]
            row["predicted"] = predicted

    def table_rows(self) -> list[tuple[str, dict]]:
        """The HTML table's rows for the gray images and the originals."""
        return [(RENDERINGS[key], self.accuracy(key)) for key in ("gray", "original")]

    def notes(self) -> list[str]:
        classifier = self.classifier
        size = classifier.data_config["input_size"]
        config = classifier.data_config
        notes = [
            (
                f"top-1 / top-5: accuracy of the classifier {classifier.options.name} ({classifier.options.weights}) "
                "on the gray images, on each checkpoint's colourisation (its row) and on the original photos; "
                f"{self.num_classes} classes from {classifier.classes.source}; chance is {1 / self.num_classes:.3g}."
            ),
            (
                f"Classifier input: {size[1]}x{size[2]} (timm's preprocessing: crop_pct {config['crop_pct']}, "
                f"mean {tuple(round(m, 3) for m in config['mean'])}, std {tuple(round(s, 3) for s in config['std'])})."
            ),
        ]
        if self.num_classes < TOP5_MIN_CLASSES:
            notes.append(f"top-5 is not reported: with {self.num_classes} classes (5 or fewer) it is 1 by construction.")
        return notes


def format_accuracy(report: dict) -> str:
    """The terminal's lines for colourise-then-classify, under the metrics table."""
    info = report["classification"]

    def cell(values: dict) -> str:
        top5 = values.get("top5")
        return f"top-1 {values['top1']:.4f}" + (f", top-5 {top5:.4f}" if top5 is not None else "")

    lines = [f"classifier {info['classifier']} ({info['num_classes']} classes, chance {info['chance']:.3g}):"]
    lines.append(f"  gray        {cell(info['gray'])}")
    for entry in report["checkpoints"]:
        lines.append(f"  colourised  {cell(entry['classification'])}  {entry['ckpt']}")
    lines.append(f"  original    {cell(info['original'])}")
    return "\n".join(lines)
