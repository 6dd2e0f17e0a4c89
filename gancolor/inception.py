"""The Inception-v3 of published FID and KID, from a local file, without running code from it.

Papers' FID and KID (TTUR's TensorFlow code, pytorch-fid, torch-fidelity, StyleGAN's
metrics) use the TensorFlow Inception graph of 2015-12-05, which torch-fidelity ported to
PyTorch (weights-inception-2015-12-05-6726825d.pth; pytorch-fid ships the same port as
pt_inception-2015-12-05-6726825d.pth). torchmetrics' FID and KID run that port
(`NoTrainInceptionV3`, torch-fidelity's network). Given no path, both download the file;
given one, torch-fidelity reads it with torch.load(weights_only=False), which runs any code
pickled in it. So gancolor never hands them the user's file: torch-fidelity is given a
private temporary file holding an empty dict (it builds the layers, then loads that), and
the user's file is read here with weights_only=True (or as safetensors), checked key by key
and shape by shape against those layers, and only then loaded into them.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch
from torch import nn

# Where to get the file (the user downloads it; gancolor never does).
TF_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
TF_INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
TF_INCEPTION_CLASSES = 1008  # the 2015 graph's classifier; torchvision's ImageNet Inception has 1000
IMPLEMENTATION = "torchmetrics FrechetInceptionDistance / KernelInceptionDistance + torch-fidelity TF-Inception-v3 (2048-d pool features)"
RESIZE = "299x299 bilinear, TF1-compatible (torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x, no antialias)"


def sha256_prefix(path: Path, digits: int = 12) -> str:
    """The first `digits` hex digits of the file's SHA-256: which weights gave a number."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:digits]


def is_torchvision_layout(state: dict[str, torch.Tensor]) -> bool:
    """torchvision's inception_v3 file: the same layer names, but a 1000-class head and
    (usually) the auxiliary classifier."""
    fc = state.get("fc.weight")
    return any(k.startswith("AuxLogits.") for k in state) or (fc is not None and fc.shape[0] == 1000)


def _tf_inception_class():
    """torchmetrics' NoTrainInceptionV3 whose construction loads nothing of the user's."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    class UnloadedTFInception(NoTrainInceptionV3):
        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            # torch-fidelity's __init__ loads the file it is given; gancolor gives it an
            # empty dict of its own, so the layers keep their initial values until
            # load_checked() puts the checked tensors in.
            if not state_dict:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    return UnloadedTFInception


def unloaded_tf_inception() -> nn.Module:
    """torchmetrics' TF-Inception-v3 (torch-fidelity's layers), randomly initialised, built
    without any download and without reading any file but an empty dict gancolor writes."""
    with tempfile.TemporaryDirectory(prefix="gancolor-inception-") as folder:
        empty = Path(folder) / "empty.pth"
        torch.save({}, empty)
        # antialias=False: torch-fidelity's TF1-compatible bilinear resize, as in the papers.
        return _tf_inception_class()("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty),
                                     antialias=False)


def layout_problem(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """Why `state` does not fit the layers `own`, in a few words; None when it fits.
    BatchNorm's num_batches_tracked may be absent (older files): torch fills it in."""
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing:
        return f"missing {len(missing)} tensors ({', '.join(missing[:3])})"
    if unexpected:
        return f"{len(unexpected)} unexpected tensors ({', '.join(unexpected[:3])})"
    if wrong:
        k = wrong[0]
        return f"wrong shape of {len(wrong)} tensors ({k}: {tuple(state[k].shape)}, expected {tuple(own[k].shape)})"
    return None


class TFInceptionFeatures(nn.Module):
    """2048-d pool features of the TF-Inception-v3 for sRGB batches in [0, 1] (or uint8).

    The network takes 8-bit images, as the TensorFlow graph did; gancolor's images are
    8-bit values / 255, so rounding (not torchmetrics' truncating `* 255).byte()`) gives
    back exactly the bytes written."""

    num_features = 2048

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> TFInceptionFeatures:
        return super().train(False)  # BatchNorm keeps the graph's statistics

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.dtype != torch.uint8:
            rgb = (rgb.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return self.net(rgb)


def load_checked(state: dict[str, torch.Tensor]) -> TFInceptionFeatures | str:
    """The features module with `state` loaded, or why `state` does not fit."""
    net = unloaded_tf_inception()
    problem = layout_problem(net.state_dict(), state)
    if problem is not None:
        return problem
    net.load_state_dict(state, strict=False)  # strict=False only for num_batches_tracked, checked above
    return TFInceptionFeatures(net.eval())
