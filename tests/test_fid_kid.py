"""FID and KID over the TF-Inception-v3 of papers (torchmetrics + torch-fidelity), from a
local file that is never handed to torch.load(weights_only=False), with nothing downloaded.

The weights file is written here, randomly initialised, from torch-fidelity's own layers:
the real file (weights-inception-2015-12-05-6726825d.pth) is not in the repository and is
never downloaded. Its values do not matter for the loading path, the sizes and the report;
the convolutions get Kaiming initialisation so that the features vary between images
(PyTorch's default initialisation shrinks them to ~1e-17, which gancolor rightly refuses).
"""

import hashlib
import io
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gancolor import metrics as M
from gancolor.metrics import MetricUnavailable
from helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def tf_weights(tmp_path_factory):
    """A random state dict of torch-fidelity's FeatureExtractorInceptionV3, saved as the real file is."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Layers(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # its __init__ loads weights; keep the random ones
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    net = Layers("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("weights") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def _images(seed: int, n: int = 3, size: int = 48) -> torch.Tensor:
    """8-bit smooth colour images as [0, 1] floats (what evaluate feeds)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round() / 255


def test_kid_for_a_small_set_fid_refused_unless_forced(offline, tf_weights):
    distances = M.load_inception_distances(str(tf_weights))  # kid.subset_size 1000 > 3 images: capped
    info = distances.info
    assert info["comparable_with_papers"] is True
    assert info["sha256"] == hashlib.sha256(tf_weights.read_bytes()).hexdigest()[:12]
    assert "torch-fidelity TF-Inception-v3" in info["implementation"] and "TF1-compatible" in info["resize"]
    assert info["sha256"] in M.describe_inception(info)

    real, fake = _images(0), _images(1)
    distances.update(real, real=True)
    distances.update(fake, real=False)
    values = distances.compute()
    # KID is unbiased, so a small set can give a slightly negative value; it must be a number.
    assert math.isfinite(values["kid"]) and math.isfinite(values["kid_std"]) and values["kid_std"] > 0
    assert values["fid"].startswith("unavailable: 3 images; FID needs at least 2048")
    # Same KID again: the subsets are drawn with a fixed seed.
    distances.update(fake, real=False)
    assert distances.compute()["kid"] == values["kid"]

    distances.fid_force = True  # fid.force=true; the real images' features are kept
    distances.update(real, real=False)
    same = distances.compute()
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert math.isfinite(same["kid"])


def test_weights_with_pickled_code_are_refused_and_never_run(offline, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": Payload()}, crafted)
    with pytest.raises(MetricUnavailable) as info:
        M.load_inception_distances(str(crafted))
    message = str(info.value)
    assert message.startswith(f"unavailable: refused {crafted}: it holds pickled objects") and "\n" not in message
    assert not marker.exists()


def test_wrong_layout_is_named(offline, tf_weights, tmp_path):
    state = torch.load(tf_weights, weights_only=True)
    state["fc.weight"] = torch.zeros(10, 2048)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(MetricUnavailable, match=r"does not hold TF-Inception-v3 weights .*wrong shape of 1 tensors \(fc.weight"):
        M.load_inception_distances(str(bad))


def test_evaluate_reports_kid_fid_status_inception_and_both_ratios(offline, tf_weights, tmp_path, capsys):
    from gancolor.evaluate import main

    from skimage import data

    root = tmp_path / "val"
    root.mkdir()
    for name, image in [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee())]:
        Image.fromarray(image[::8, ::8]).save(root / f"{name}.png")
    ckpt = tiny_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    out = tmp_path / "eval"
    assert main([f"ckpt={ckpt}", f"data.root={root}", f"output={out}", f"fid.weights={tf_weights}",
                 "lpips.weights=null", "progress_bar=false", "num_samples=1", "data.image_size=48"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    digest = hashlib.sha256(tf_weights.read_bytes()).hexdigest()[:12]
    assert report["inception"]["sha256"] == digest and report["inception"]["comparable_with_papers"] is True
    metrics = report["checkpoints"][0]["metrics"]
    assert math.isfinite(metrics["kid"]) and metrics["fid"].startswith("unavailable: 3 images")
    rows = report["checkpoints"][0]["per_image"]
    per_photo = [r["colorfulness"] / r["colorfulness_true"] for r in rows]
    assert [r["colorfulness_ratio"] for r in rows] == pytest.approx(per_photo, rel=1e-5)
    assert metrics["colorfulness_ratio_per_photo"] == pytest.approx(float(np.median(per_photo)), rel=1e-5)
    assert metrics["colorfulness_ratio"] == pytest.approx(
        np.mean([r["colorfulness"] for r in rows]) / np.mean([r["colorfulness_true"] for r in rows]), rel=1e-5)
    html = (out / "report.html").read_text()
    for text in ("colourfulness ratio (set)", "colourfulness ratio (per photo, median)", "KID",
                 "torch-fidelity TF-Inception-v3", f"sha256 {digest}", "TF1-compatible"):
        assert text in html
    assert "ratio(set)" in printed and "ratio(photo)" in printed and f"sha256 {digest}" in printed
