"""Colourise-then-classify (python -m gancolor.evaluate classifier=...): a classifier
that needs colour is at chance on gray images, and a colouriser gives it the classes back.

The photos: a rectangle on a gray background, red or blue; its colour is the class. A
tiny timm classifier is trained on colour images whose rectangle position, lightness
and saturation are random, so colour alone decides. In the photos evaluated (and those
the colouriser trains on) red rectangles are in the top half and blue ones in the
bottom half, all of one lightness: gray, the classes differ only in where the rectangle
is, which a convolutional classifier with global pooling hardly sees, while a U-Net
colouriser learns "top is red" in a few seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor import color
from gancolor.build import build_recipe
from gancolor.evaluate import main
from gancolor.trainer import Trainer
from helpers import TINY_PIX2PIX, compose, one_error_line, save_checkpoint, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
CLASSES = ["blue", "red"]  # sorted, as the class folders are
CHROMA = {"blue": (10.0, -50.0), "red": (55.0, 35.0)}  # a*, b* of each class's colour
LIGHTNESS = 50.0  # L* of every rectangle in the photos evaluated
BACKGROUND = 75.0  # L* of the neutral gray background
CLASSIFIER = "test_resnet"  # timm's tiny ResNet (16-96 channels), made for tests
# The classifier's preprocessing, given explicitly: 32 px, no crop, [-1, 1].
CLASSIFIER_INPUT = ["classifier.image_size=32", "classifier.crop_pct=1", "classifier.mean=[0.5,0.5,0.5]", "classifier.std=0.5"]
QUIET = ["data.image_size=32", "progress_bar=false", "lpips.weights=null", "fid.weights=null"]


def rectangles(rng, labels, top, lightness=None, saturation=None) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8: one rectangle of its class's colour per image, in the
    top half where `top` says so, else in the bottom half. `lightness` / `saturation`:
    callables giving each rectangle's L* and chroma scale (default LIGHTNESS, 1)."""
    n = len(labels)
    lab = np.zeros((n, 3, SIZE, SIZE), np.float32)
    lab[:, 0] = BACKGROUND
    for i, label in enumerate(labels):
        h, w = rng.integers(6, SIZE // 2 - 2), rng.integers(8, SIZE - 4)
        y0 = rng.integers(1, SIZE // 2 - h) + (0 if top[i] else SIZE // 2)
        x0 = rng.integers(1, SIZE - w)
        scale = saturation() if saturation else 1.0
        lab[i, 0, y0 : y0 + h, x0 : x0 + w] = lightness() if lightness else LIGHTNESS
        lab[i, 1:, y0 : y0 + h, x0 : x0 + w] = np.array(CHROMA[CLASSES[label]], np.float32)[:, None, None] * scale
    lab = torch.from_numpy(lab)
    rgb = color.lab_normalized_to_rgb(lab[:, :1] / 50 - 1, lab[:, 1:] / 110)
    return color.float_to_uint8(rgb).permute(0, 2, 3, 1).numpy()


def photos_to_evaluate(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Red rectangles in the top half, blue ones in the bottom half, all of one lightness."""
    labels = np.arange(n) % 2
    return rectangles(rng, labels, top=labels == CLASSES.index("red")), labels


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A test_resnet trained for a few seconds on colour images where only colour decides."""
    import timm
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    images = rectangles(rng, labels, top=rng.random(256) < 0.5,
                        lightness=lambda: rng.uniform(25, 65), saturation=lambda: rng.uniform(0.1, 1.2))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)  # CLASSIFIER_INPUT
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = timm.create_model(CLASSIFIER, pretrained=False, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        batch = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("classifier") / f"{CLASSIFIER}.safetensors"
    save_file(model.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def colouriser(tmp_path_factory) -> Path:
    """A tiny pix2pix, pretrained (L1, the trainer's pretrain phase) for a few seconds on
    photos like those evaluated, saved as training saves it."""
    cfg = compose(*TINY_PIX2PIX, "model.lr=1e-2")  # a high rate: colours within 50 steps
    torch.manual_seed(0)
    recipe = build_recipe(cfg)
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    images, _ = photos_to_evaluate(np.random.default_rng(2), 256)
    rgb = torch.from_numpy(images).permute(0, 3, 1, 2)
    for iteration in range(50):
        L, ab = color.batch_to_lab(rgb[torch.randint(0, len(rgb), (16,))], "cpu")
        trainer.train_iteration(recipe.pretrain_steps(), {"L": L, "ab": ab}, iteration=iteration)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.pt"
    return save_checkpoint(path, cfg, recipe, epoch=1, global_step=50)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """40 held-out photos in ImageFolder layout: val/blue/*.png, val/red/*.png."""
    root = tmp_path_factory.mktemp("val")
    images, labels = photos_to_evaluate(np.random.default_rng(1), 40)
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / CLASSES[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / CLASSES[label] / f"{i:02d}.png")
    return root


def test_colourising_gives_a_colour_trained_classifier_back_what_gray_took(weights, colouriser, class_folder, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main([
        f"ckpt={colouriser}", f"data.root={class_folder}", f"output={out}", "num_samples=2",
        f"classifier={CLASSIFIER}", f"classifier.weights={weights}", *CLASSIFIER_INPUT, *QUIET,
    ])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    info = report["classification"]
    assert info["classes"] == CLASSES and "class folders" in info["classes_from"]  # no classes.txt beside the weights
    assert info["chance"] == 0.5 and info["preprocessing"]["input_size"] == [3, 32, 32]
    gray, original = info["gray"]["top1"], info["original"]["top1"]
    colourised = report["checkpoints"][0]["classification"]["top1"]
    assert abs(gray - 0.5) <= 0.15, info  # near chance: colour was what it knew
    assert original >= 0.95, info
    assert colourised >= gray + 0.3, (colourised, info)

    # Two classes: top-5 is not reported (it would be 1 whatever the classifier does).
    assert info["top5_reported"] is False
    assert info["gray"]["top5"] is None and report["checkpoints"][0]["classification"]["top5"] is None

    # The accuracy is the share of photos whose prediction is their folder.
    rows = report["checkpoints"][0]["per_image"]
    assert [row["class"] for row in rows] == [Path(row["path"]).parts[0] for row in rows]
    assert colourised == pytest.approx(np.mean([row["predicted"] == row["class"] for row in rows]))
    assert gray == pytest.approx(np.mean([r["gray"] == r["class"] for r in info["per_image"]]))

    html = (out / "report.html").read_text()
    assert "top-1" in html and "gray (classifier input without colour)" in html and "original photos" in html
    assert "top-5 is not reported" in html
    printed = capsys.readouterr().out
    assert f"classifier {CLASSIFIER} (2 classes, chance 0.5)" in printed and "colourised  top-1" in printed


def test_top5_is_reported_with_more_than_five_classes_named_by_a_file(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    names = ["f", "e", "d", "c", "b", "a"]  # the outputs' order, not the folders'
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(timm.create_model(CLASSIFIER, pretrained=False, num_classes=6).state_dict(), str(folder / "w.safetensors"))
    classes = tmp_path / "names.txt"
    classes.write_text("\n".join(names) + "\n")
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / name / "1.png")
    out = tmp_path / "eval"
    code = main([
        f"ckpt={tiny_checkpoint(tmp_path / 'g.pt')}", f"data.root={root}", f"output={out}",
        f"classifier.name={CLASSIFIER}", f"classifier.weights={folder / 'w.safetensors'}", f"classifier.classes={classes}",
        *CLASSIFIER_INPUT, *QUIET,
    ])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    info = report["classification"]
    assert info["classes"] == names and info["classes_from"] == str(classes) and info["top5_reported"] is True
    for accuracy in (info["gray"], info["original"], report["checkpoints"][0]["classification"]):
        assert 0 <= accuracy["top1"] <= accuracy["top5"] <= 1
    assert "top-5 is not reported" not in (out / "report.html").read_text()


@pytest.fixture(scope="module")
def mistakes(weights, class_folder, tmp_path_factory) -> dict:
    """What the error cases need: a checkpoint, and copies of the classifier's weights and photos."""
    tmp_path = tmp_path_factory.mktemp("mistakes")
    known = tmp_path / "known"
    known.mkdir()
    shutil.copy(weights, known / weights.name)
    (known / "classes.txt").write_text("blue\nred\n")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((class_folder / "red").iterdir()), flat / "a.png")
    three = tmp_path / "three"
    shutil.copytree(class_folder, three)
    shutil.copytree(class_folder / "red", three / "green")
    return {"ckpt": tiny_checkpoint(tmp_path / "g.pt"), "known": known / weights.name, "flat": flat, "three": three}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing weights", "classifier.weights: weights file not found: "),
        ("another model", "does not fit timm model test_convnext: missing"),
        ("no class folders", "data.root has no class subfolders: "),
        ("unknown class", "1 class folder(s) of data.root the classifier does not know: green (its 2 classes are from "),
        ("more folders than outputs",
         "different shape (2): fc.weight (2, 96) vs (3, 96), fc.bias (2,) vs (3,) (built with 3 classes, from the class folders of "),
        ("unknown model", "classifier: timm has no model 'test_resnett' (did you mean test_resnet"),
    ],
)
def test_classifier_mistakes_are_one_line_and_exit_2(case, message, mistakes, weights, class_folder, tmp_path, capsys):
    args = {
        "missing weights": [f"data.root={class_folder}", f"classifier={CLASSIFIER}", f"classifier.weights={tmp_path / 'none.safetensors'}"],
        "another model": [f"data.root={class_folder}", "classifier=test_convnext", f"classifier.weights={weights}"],
        "no class folders": [f"data.root={mistakes['flat']}", f"classifier={CLASSIFIER}", f"classifier.weights={weights}"],
        "unknown class": [f"data.root={mistakes['three']}", f"classifier={CLASSIFIER}", f"classifier.weights={mistakes['known']}"],
        "more folders than outputs": [f"data.root={mistakes['three']}", f"classifier={CLASSIFIER}", f"classifier.weights={weights}"],
        "unknown model": [f"data.root={class_folder}", "classifier=test_resnett", f"classifier.weights={weights}"],
    }[case]
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_:
        main([f"ckpt={mistakes['ckpt']}", f"output={out}", *args, *CLASSIFIER_INPUT, *QUIET])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line, line
    assert not out.exists()


def test_a_file_that_holds_no_weights_is_named_so_in_gancolor_words(class_folder, tmp_path, capsys):
    """classifier.weights= a JPEG: one line, 'not a safetensors file or a torch state dict',
    never torch's advice to load with weights_only=False (which would let a file run code),
    nor a sentence cut in half. The other weights loaders say it alike."""
    from gancolor.checkpoint import load_checkpoint
    from gancolor.errors import CheckpointError
    from gancolor.metrics import MetricUnavailable
    from gancolor.metrics import read_state_dict as metric_weights
    from gancolor.nets.weights import read_state_dict as net_weights

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(photo)
    with pytest.raises(SystemExit) as exit_:
        main([f"ckpt={tiny_checkpoint(tmp_path / 'g.pt')}", f"output={tmp_path / 'eval'}", f"data.root={class_folder}",
              f"classifier={CLASSIFIER}", f"classifier.weights={photo}", *CLASSIFIER_INPUT, *QUIET])
    line = one_error_line(capsys.readouterr().err)
    assert exit_.value.code == 2
    assert line.endswith(f"classifier.weights: cannot read {photo}: not a safetensors file or a torch state dict"), line

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    disguised = tmp_path / "photo.safetensors"
    disguised.write_bytes(photo.read_bytes())
    for path in (photo, truncated, disguised):
        messages = []
        for load, error in ((net_weights, CheckpointError), (metric_weights, MetricUnavailable), (load_checkpoint, CheckpointError)):
            with pytest.raises(error) as info:
                load(path)
            messages.append(str(info.value))
        assert all("weights_only" not in m and "\n" not in m for m in messages), messages
        assert all("not a safetensors file or a torch state dict" in m for m in messages[:2]), messages
        if path == truncated:
            assert messages[2].endswith("not a PyTorch checkpoint file (a truncated or damaged one?)"), messages
