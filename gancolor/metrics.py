"""Image-quality metrics used by validation and `python -m gancolor.evaluate` alike.

Every function takes sRGB batches in [0, 1], (N, 3, H, W), and returns one value per
image, so callers can average over a dataset or keep per-image rows for a report.

PSNR is capped at PSNR_CAP dB: identical images would otherwise give +inf, which
poisons means and cannot be written to JSON.

LPIPS and FID need pretrained backbones. They are built only from weight files the
user has on disk (`load_lpips`, `load_fid`); torchmetrics' own constructors would
download them, so they are never called in a way that can. Without the file, the
loaders raise MetricUnavailable, whose message is what a report shows in the column.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gancolor import color

PSNR_CAP = 100.0

# Histogram intersection bins the a and b values of every pixel (CIE Lab units, not
# normalised) into bins one unit wide centred on the integers -110..110, which covers
# the sRGB gamut (a in about [-86, 98], b in [-108, 95]).
HIST_RANGE = 110
HIST_BINS = 2 * HIST_RANGE + 1


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, capped at PSNR_CAP for identical images."""
    err = mse(pred, target).clamp_min(data_range**2 * 10 ** (-PSNR_CAP / 10))
    return 10.0 * torch.log10(data_range**2 / err)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), one value per image: the mean of the
    SSIM map with an 11x11 Gaussian window (sigma 1.5). Kornia's, which equals
    torchmetrics' to float precision: importing torchmetrics (and with it torchvision
    and scipy) would add seconds to every training run's start."""
    import kornia

    return kornia.metrics.ssim(pred.float(), target.float(), 11, max_val=1.0, padding="same").mean((1, 2, 3))


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness M, on the 0..255 scale of the paper.

    rg = R - G, yb = (R + G)/2 - B;  M = sigma_rgyb + 0.3 * mu_rgyb.
    Gray images score 0; the paper calls ~33 "moderately" and ~59 "quite" colourful.
    """
    rgb = rgb.float() * 255.0
    r, g, b = rgb[:, 0].flatten(1), rgb[:, 1].flatten(1), rgb[:, 2].flatten(1)
    rg = r - g
    yb = 0.5 * (r + g) - b
    sigma = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mu = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return sigma + 0.3 * mu


def ab_histograms(rgb: torch.Tensor) -> torch.Tensor:
    """Counts of each image's a and b values, (N, 2, HIST_BINS), float32.

    Bin k holds the values in [k - 110.5, k - 109.5): one Lab unit per bin, centred on
    the integers so that a neutral pixel (a = b = 0, give or take rounding) always
    lands in the same bin. Values beyond +-110 go to the end bins.
    """
    _, ab = color.rgb_to_lab_normalized(rgb)
    n = ab.shape[0]
    index = torch.floor(ab.float() * color.AB_SCALE + 0.5).long().clamp_(-HIST_RANGE, HIST_RANGE) + HIST_RANGE
    # One bincount for the whole batch: offset each (image, channel) into its own range.
    offsets = torch.arange(2 * n, device=ab.device).view(n, 2, 1, 1) * HIST_BINS
    counts = torch.bincount((index + offsets).flatten(), minlength=2 * n * HIST_BINS)
    return counts.view(n, 2, HIST_BINS).float()


def histogram_intersection(hist: torch.Tensor, hist_true: torch.Tensor) -> torch.Tensor:
    """sum_k min(p_k, q_k) of the normalised histograms, over the last dimension.

    1 for identical distributions, 0 for disjoint ones; reported for a and b apart, as
    in seed 003's table (CIC 0.85, PixColor 0.93 on ImageNet; a desaturating L1 U-Net
    about 0.63). Depends on the bin width: compare values made with the same bins.
    """
    p = hist / hist.sum(-1, keepdim=True).clamp_min(1e-12)
    q = hist_true / hist_true.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.minimum(p, q).sum(-1)


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM, MAE, MSE, the colourfulness of prediction and truth, and
    the a/b histograms of both.

    The colourfulness *ratio* (mean over a set of pred / mean of truth) is what shows
    the gray-or-sepia collapse; it is a ratio of means, so `summarize` computes it.
    Histogram intersection compares the a and b distributions of a whole set (pooled
    over all its pixels, as the literature reports it), so `image_metrics` returns the
    per-image counts ("ab_hist", "ab_hist_true", (N, 2, HIST_BINS)) and `summarize`
    pools them.
    """
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "mae": mae(pred, target),
        "mse": mse(pred, target),
        "colorfulness": colorfulness(pred),
        "colorfulness_true": colorfulness(target),
        "ab_hist": ab_histograms(pred),
        "ab_hist_true": ab_histograms(target),
    }


HISTOGRAM_KEYS = ("ab_hist", "ab_hist_true")


def summarize(per_image: dict[str, list[torch.Tensor] | torch.Tensor]) -> dict[str, float]:
    """Means over a dataset of `image_metrics` outputs, plus the colourfulness ratio and
    the histogram intersections of a and b (`hist_intersection_a`, `_b`)."""
    means = {}
    pooled = {}
    for name, values in per_image.items():
        values = torch.cat(list(values)) if isinstance(values, (list, tuple)) else values
        if name in HISTOGRAM_KEYS:
            pooled[name] = values.float().sum(0)
            continue
        means[name] = float(values.float().mean())
    if "colorfulness" in means and "colorfulness_true" in means:
        means["colorfulness_ratio"] = means["colorfulness"] / max(means["colorfulness_true"], 1e-8)
    if len(pooled) == 2:
        a, b = histogram_intersection(pooled["ab_hist"], pooled["ab_hist_true"]).tolist()
        means["hist_intersection_a"], means["hist_intersection_b"] = a, b
    return means


# -- LPIPS and FID, from local weights only ------------------------------------------


class MetricUnavailable(Exception):
    """A metric that cannot be computed here; str() is what the report column says."""


# What torchvision names each backbone's ImageNet weights in its cache folder
# ($TORCH_HOME/hub/checkpoints): `weights=auto` looks there, and nowhere online.
LPIPS_BACKBONES = {
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}
FID_WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"


def cached_weights_path(file_name: str) -> Path:
    """Where torchvision keeps a downloaded weights file (torch.hub's cache; no download)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def resolve_weights(setting, default_file: str, key: str) -> Path:
    """`auto` -> torchvision's cache path; a path -> itself; null -> MetricUnavailable."""
    if setting is None:
        raise MetricUnavailable(f"unavailable: turned off ({key}=null)")
    path = cached_weights_path(default_file) if str(setting) == "auto" else Path(os.path.expanduser(str(setting)))
    if not path.is_file():
        raise MetricUnavailable(f"unavailable: weights not found at {path} (set {key}=PATH)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file loaded with weights_only=True
    (a weights file from the internet must not be able to run code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, pickled code, wrong format
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MetricUnavailable(f"unavailable: cannot read weights {path}: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailable(f"unavailable: {path} does not hold a state dict of tensors")
    return state


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018) on sRGB in [0, 1]; lower is closer. One value per image.

    torchmetrics' network with its shipped linear heads (LPIPS v0.1), and the backbone's
    ImageNet weights read from a local torchvision file: the backbone is created
    without weights (`pnet_rand`), so torchvision never goes looking for them online.
    """

    def __init__(self, weights: Path, net: str = "alex") -> None:
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise MetricUnavailable(f"unavailable: lpips.net must be one of {', '.join(LPIPS_BACKBONES)}, got {net!r}")
        try:
            from torchmetrics.functional.image.lpips import _NoTrainLpips
        except ImportError as exc:  # a private class: guard against torchmetrics moving it
            raise MetricUnavailable(f"unavailable: this torchmetrics has no LPIPS network ({exc})") from None
        self.net = _NoTrainLpips(net=net, pnet_rand=True)
        _load_backbone(self.net.net, read_state_dict(weights), weights)
        self.eval()

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred.float().clamp(0, 1), target.float().clamp(0, 1), normalize=True).flatten()


def _load_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Put torchvision `features.<i>.*` weights into torchmetrics' sliced backbone.

    torchmetrics splits torchvision's `features` Sequential into slice1..sliceK, each
    keeping the original layer index as its child name, so `features.3.weight` lives at
    `sliceK.3.weight`; the classifier is not used and may be absent from the file.
    """
    where = {}
    for slice_name, block in backbone.named_children():
        for index, _ in block.named_children():
            where[index] = slice_name
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[1] in where:
            mapped[f"{where[parts[1]]}.{parts[1]}.{parts[2]}"] = value
    own = backbone.state_dict()
    missing = sorted(set(own) - set(mapped))
    wrong = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or wrong:
        detail = f"missing {', '.join(missing[:3])}" if missing else f"wrong shape {', '.join(wrong[:3])}"
        raise MetricUnavailable(f"unavailable: {source} does not fit the LPIPS backbone ({detail})")
    backbone.load_state_dict(mapped)


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 pool features (2048-d) of sRGB images in [0, 1].

    FID from these features is comparable between gancolor runs, not with published
    FIDs, which use the TensorFlow Inception graph (pytorch-fid / torch-fidelity weights).
    """

    num_features = 2048

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input: the ImageNet weights were ported from TensorFlow and expect
        # their inputs in [-1, 1]; torchvision's flag converts ImageNet-normalised input.
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
        state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith("AuxLogits.")}
        own = net.state_dict()
        if set(state) != set(own) or any(own[k].shape != state[k].shape for k in own):
            raise MetricUnavailable(
                f"unavailable: {weights} does not hold torchvision Inception-v3 weights ({FID_WEIGHTS_FILE})"
            )
        net.load_state_dict(state)
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # BatchNorm must keep its ImageNet statistics

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)


def load_lpips(setting, net: str = "alex", key: str = "lpips.weights") -> LPIPS:
    """LPIPS from the local weights `setting` names (see resolve_weights)."""
    if net not in LPIPS_BACKBONES:
        raise MetricUnavailable(f"unavailable: lpips.net must be one of {', '.join(LPIPS_BACKBONES)}, got {net!r}")
    return LPIPS(resolve_weights(setting, LPIPS_BACKBONES[net][1], key), net)


def load_fid(setting, key: str = "fid.weights"):
    """torchmetrics' FrechetInceptionDistance over local Inception-v3 weights (see fid_metric)."""
    return fid_metric(InceptionFeatures(resolve_weights(setting, FID_WEIGHTS_FILE, key)))


def fid_metric(features: nn.Module):
    """torchmetrics' FrechetInceptionDistance over `features`, a module that maps sRGB
    batches in [0, 1] to (N, num_features).

    update(rgb in [0, 1], real=True/False) per batch, then fid_value(). With fewer than
    a few thousand images the value is biased upwards (Chong & Forsyth 2020), so
    compare FIDs only over the same image set.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=True)


# Below this mean variance per feature the features do not tell images apart: the
# backbone is not a trained one (random Inception weights give about 1e-17, and an FID
# of about 1e-14 for any two image sets). ImageNet Inception pool features vary by ~0.1.
FID_MIN_FEATURE_VARIANCE = 1e-10


def fid_value(fid) -> float:
    """The FID of the features `fid` holds, or MetricUnavailable where that number would
    not mean what FID means.

    The Frechet distance of two Gaussians needs their covariances: from N images of D
    features the estimate has rank at most N - 1, so with N <= D (19 photos, 2048
    Inception features) it is singular and the "FID" measures the sample size as much
    as the images. Features that barely vary (untrained weights) give a distance near 0
    for any two sets. Both read as unavailable, with the reason.
    """
    n_real, n_fake = int(fid.real_features_num_samples), int(fid.fake_features_num_samples)
    dims = int(fid.real_features_sum.numel())
    if min(n_real, n_fake) <= dims:
        raise MetricUnavailable(
            f"unavailable: {min(n_real, n_fake)} images for {dims} features (a singular covariance); "
            f"FID needs more than {dims} images"
        )
    for total, cov_sum, n in ((fid.real_features_sum, fid.real_features_cov_sum, n_real),
                              (fid.fake_features_sum, fid.fake_features_cov_sum, n_fake)):
        mean = total / n
        variance = float((cov_sum.diagonal() - n * mean * mean).sum() / (n - 1) / dims)
        if variance < FID_MIN_FEATURE_VARIANCE:
            raise MetricUnavailable(
                f"unavailable: the features barely vary between images (mean variance {variance:.1e}): "
                "are fid.weights trained Inception-v3 weights?"
            )
    return float(fid.compute())
