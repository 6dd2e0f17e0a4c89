"""Image-quality metrics used by validation and `python -m gancolor.evaluate` alike.

Every function takes sRGB batches in [0, 1], (N, 3, H, W), and returns one value per
image, so callers can average over a dataset or keep per-image rows for a report.

PSNR is capped at PSNR_CAP dB: identical images would otherwise give +inf, which
poisons means and cannot be written to JSON.

LPIPS, FID and KID need pretrained backbones. They are built only from weight files the
user has on disk (`load_lpips`, `load_inception_distances`); torchmetrics' own
constructors would download them, so they are never called in a way that can. Without
the file, the loaders raise MetricUnavailable, whose message is what a report shows in
the column. FID and KID compare with papers only over the TF-Inception weights
(gancolor.inception); torchvision's Inception file still works, labelled as not comparable.
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


def photo_colorfulness_ratio(colorfulness_pred: torch.Tensor, colorfulness_true: torch.Tensor) -> torch.Tensor:
    """Each photo's M(output) / M(truth); a truth with M below 1e-6 counts as 1e-6."""
    return colorfulness_pred.float() / colorfulness_true.float().clamp_min(1e-6)


def summarize(per_image: dict[str, list[torch.Tensor] | torch.Tensor]) -> dict[str, float]:
    """Means over a dataset of `image_metrics` outputs, the two colourfulness ratios and
    the histogram intersections of a and b (`hist_intersection_a`, `_b`).

    colorfulness_ratio (set-level): mean M of the outputs / mean M of the truths, so
    colourful photos weigh more. colorfulness_ratio_per_photo: the median over photos
    of each photo's M(output) / M(truth), so every photo counts once and a nearly gray
    truth (M near 0, ratio huge) cannot dominate.
    """
    means = {}
    pooled = {}
    columns = {}
    for name, values in per_image.items():
        values = torch.cat(list(values)) if isinstance(values, (list, tuple)) else values
        if name in HISTOGRAM_KEYS:
            pooled[name] = values.float().sum(0)
            continue
        columns[name] = values.float()
        means[name] = float(values.float().mean())
    if "colorfulness" in means and "colorfulness_true" in means:
        means["colorfulness_ratio"] = means["colorfulness"] / max(means["colorfulness_true"], 1e-8)
        ratios = photo_colorfulness_ratio(columns["colorfulness"], columns["colorfulness_true"])
        means["colorfulness_ratio_per_photo"] = float(ratios.double().quantile(0.5))  # the mid-point of an even count
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
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, wrong format, pickled code
        from gancolor.nets.weights import load_failure

        reason = load_failure(exc, path)
        if "could run code" in reason:
            raise MetricUnavailable(f"unavailable: refused {path}: {reason}") from None
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
    FIDs, which use the TensorFlow Inception graph (gancolor.inception, torch-fidelity's
    weights); kept for users who have only torchvision's file, and labelled so.
    """

    num_features = 2048

    def __init__(self, weights: Path, state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input: the ImageNet weights were ported from TensorFlow and expect
        # their inputs in [-1, 1]; torchvision's flag converts ImageNet-normalised input.
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
        state = read_state_dict(weights) if state is None else state
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
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


def fid_metric(features: nn.Module):
    """torchmetrics' FrechetInceptionDistance over `features`, a module that maps sRGB
    batches in [0, 1] to (N, num_features).

    update(rgb in [0, 1], real=True/False) per batch, then fid_value(), which refuses
    fewer than FID_MIN_IMAGES images unless forced: below that the value is biased
    upwards (Chong & Forsyth 2020).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=True)




def kid_metric(features: nn.Module, subsets: int = 100, subset_size: int = 1000):
    """torchmetrics' KernelInceptionDistance over `features` (as fid_metric); see kid_value."""
    from torchmetrics.image.kid import KernelInceptionDistance

    return KernelInceptionDistance(feature=features, subsets=subsets, subset_size=subset_size,
                                   normalize=True, reset_real_features=True)


# FID is refused below this many images (either set) unless forced: from N images of
# 2048 features the covariance has rank at most N - 1, and the estimate is biased
# upwards by an amount that depends on N (Chong & Forsyth 2020), so such a number
# cannot be put beside a paper's. KID is unbiased and has no such floor.
FID_MIN_IMAGES = 2048

# Below this mean variance per feature the features do not tell images apart: the
# backbone is not a trained one (random Inception weights give about 1e-17, and an FID
# of about 1e-14 for any two image sets). ImageNet Inception pool features vary by ~0.1.
FID_MIN_FEATURE_VARIANCE = 1e-10


def _flat_features(fid) -> str | None:
    """Why the features `fid` holds cannot tell images apart, or None."""
    n_real, n_fake = int(fid.real_features_num_samples), int(fid.fake_features_num_samples)
    dims = int(fid.real_features_sum.numel())
    for total, cov_sum, n in ((fid.real_features_sum, fid.real_features_cov_sum, n_real),
                              (fid.fake_features_sum, fid.fake_features_cov_sum, n_fake)):
        if n < 2:
            continue
        mean = total / n
        variance = float((cov_sum.diagonal() - n * mean * mean).sum() / (n - 1) / dims)
        if variance < FID_MIN_FEATURE_VARIANCE:
            return (f"unavailable: the features barely vary between images (mean variance {variance:.1e}): "
                    "are fid.weights trained Inception-v3 weights?")
    return None


def fid_value(fid, force: bool = False) -> float:
    """The FID of the features `fid` holds, or MetricUnavailable where that number would
    not mean what FID means: fewer than FID_MIN_IMAGES images in either set (unless
    `force`), or features that barely vary (untrained weights), with the reason."""
    n = min(int(fid.real_features_num_samples), int(fid.fake_features_num_samples))
    if n < 2:
        raise MetricUnavailable(f"unavailable: {n} image(s); FID needs at least 2")
    if n < FID_MIN_IMAGES and not force:
        raise MetricUnavailable(
            f"unavailable: {n} images; FID needs at least {FID_MIN_IMAGES} to compare with papers "
            "(fid.force=true computes it anyway; use KID for small sets)"
        )
    flat = _flat_features(fid)
    if flat:
        raise MetricUnavailable(flat)
    return float(fid.compute())


def kid_value(kid, fid=None) -> tuple[float, float]:
    """(mean, std) of KID over `kid.subsets` random subsets, each of min(kid.subset_size,
    number of images) images, so that small sets get a KID too (torchmetrics refuses a
    subset larger than the set). The subsets are drawn with a fixed seed: the same
    images give the same number. `fid`, when given, holds the same features and is used
    to refuse features that barely vary."""
    n = min(sum(int(f.shape[0]) for f in kid.real_features), sum(int(f.shape[0]) for f in kid.fake_features))
    if n < 2:
        raise MetricUnavailable(f"unavailable: {n} image(s); KID needs at least 2")
    flat = _flat_features(fid) if fid is not None else None
    if flat:
        raise MetricUnavailable(flat)
    wanted = kid.subset_size
    kid.subset_size = min(wanted, n)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            mean, std = kid.compute()
    finally:
        kid.subset_size = wanted
    return float(mean), float(std)


class _Precomputed(nn.Module):
    """The identity on features already computed: FID and KID share one Inception pass."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class InceptionDistances(nn.Module):
    """FID and KID (torchmetrics) of one set of real images against one or more sets of
    outputs, from one Inception pass per image.

    update(rgb in [0, 1], real=...) per batch; compute() gives {"fid", "kid", "kid_std"}
    (a float, or the "unavailable: ..." reason) for the outputs seen since the last
    compute(), and forgets them; the real images' features are kept, so several
    checkpoints compare with the same truth. `info` says which network and weights.
    """

    def __init__(self, features: nn.Module, info: dict | None = None, *, fid_force: bool = False,
                 kid_subsets: int = 100, kid_subset_size: int = 1000) -> None:
        super().__init__()
        self.features = features
        self.info = dict(info or {})
        self.fid_force = fid_force
        dims = int(features.num_features)
        self.fid = fid_metric(_Precomputed(dims))
        self.kid = kid_metric(_Precomputed(dims), kid_subsets, kid_subset_size)
        self.fid.reset_real_features = self.kid.reset_real_features = False

    @torch.no_grad()
    def update(self, rgb: torch.Tensor, real: bool) -> None:
        features = self.features(rgb)
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def compute(self) -> dict[str, float | str]:
        values: dict[str, float | str] = {}
        try:
            values["fid"] = fid_value(self.fid, force=self.fid_force)
        except MetricUnavailable as exc:
            values["fid"] = str(exc)
        except (RuntimeError, ValueError) as exc:
            values["fid"] = f"unavailable: {str(exc).strip().splitlines()[0][:160]}"
        try:
            values["kid"], values["kid_std"] = kid_value(self.kid, self.fid)
        except MetricUnavailable as exc:
            values["kid"] = values["kid_std"] = str(exc)
        except (RuntimeError, ValueError) as exc:
            values["kid"] = values["kid_std"] = f"unavailable: {str(exc).strip().splitlines()[0][:160]}"
        self.fid.reset()  # the outputs' features only: reset_real_features is off
        self.kid.reset()
        return values


def find_inception_weights(setting, key: str = "fid.weights") -> Path:
    """`auto` -> the first TF-Inception file in torch.hub's cache folder (torch-fidelity's
    or pytorch-fid's name), else torchvision's Inception there; a path -> itself."""
    from gancolor.inception import TF_INCEPTION_FILES, TF_INCEPTION_URL

    if setting is None or str(setting) != "auto":
        return resolve_weights(setting, FID_WEIGHTS_FILE, key)
    for name in (*TF_INCEPTION_FILES, FID_WEIGHTS_FILE):
        if cached_weights_path(name).is_file():
            return cached_weights_path(name)
    raise MetricUnavailable(
        f"unavailable: weights not found at {cached_weights_path(TF_INCEPTION_FILES[0])} "
        f"(set {key}=PATH to the TF-Inception file, {TF_INCEPTION_URL})"
    )


def load_inception_distances(setting, *, fid_force: bool = False, kid_subsets: int = 100,
                             kid_subset_size: int = 1000, key: str = "fid.weights") -> InceptionDistances:
    """FID and KID over the Inception-v3 weights `setting` names (a path, auto or null).

    The TF-Inception file (torch-fidelity's; what papers use) gives paper-comparable
    numbers; torchvision's ImageNet Inception-v3 file still works, labelled as not
    comparable with papers. The file is read without running code from it (see
    gancolor.inception); anything else in it reads as unavailable, with the reason.
    """
    from gancolor import inception

    path = find_inception_weights(setting, key)
    state = read_state_dict(path)
    digest = inception.sha256_prefix(path)
    common = {"weights": str(path), "sha256": digest}
    if inception.is_torchvision_layout(state):
        features = InceptionFeatures(path, state)
        info = {**common, "implementation": "torchmetrics FrechetInceptionDistance / KernelInceptionDistance + "
                "torchvision ImageNet Inception-v3 (2048-d pool features)",
                "resize": "299x299 bilinear with antialias (torch.nn.functional.interpolate), ImageNet normalisation",
                "comparable_with_papers": False,
                "note": "torchvision's Inception weights: compares gancolor checkpoints with each other, "
                        "NOT with published FID/KID (which use the TF-Inception file)"}
    else:
        loaded = inception.load_checked(state)
        if isinstance(loaded, str):
            raise MetricUnavailable(
                f"unavailable: {path} does not hold TF-Inception-v3 weights ({inception.TF_INCEPTION_FILES[0]}) "
                f"nor torchvision's ({FID_WEIGHTS_FILE}): {loaded}"
            )
        features = loaded
        info = {**common, "implementation": inception.IMPLEMENTATION, "resize": inception.RESIZE,
                "comparable_with_papers": True}
    return InceptionDistances(features, info, fid_force=fid_force, kid_subsets=kid_subsets,
                              kid_subset_size=kid_subset_size)


def describe_inception(info: dict) -> str:
    """One line naming what FID/KID were computed with, for the terminal and the report."""
    label = "comparable with papers" if info.get("comparable_with_papers") else "NOT comparable with papers"
    return (f"FID/KID: {info['implementation']}; weights {Path(info['weights']).name} "
            f"(sha256 {info['sha256']}); resize {info['resize']}; {label}")
