"""Colour science in one place: sRGB <-> CIE Lab on batched tensors, and the
normalisation every net in gancolor sees.

Conventions (the same for every net and recipe): L in [-1, 1] as L/50 - 1, ab in [-1, 1] as ab/110, NCHW,
float32. The conversion itself is kornia's (D65 white point, sRGB companding), so it
runs on whatever device the batch is on; this module only adds the normalisation and
the uint8 <-> float plumbing so that no other module converts colour by hand.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab

L_SCALE = 50.0
AB_SCALE = 110.0


def rgb_to_lab_normalized(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB in [0, 1], (N, 3, H, W) -> (L, ab) normalised to [-1, 1].

    Computed in float32 whatever the input dtype: Lab's cube roots lose too much in
    bf16/fp16 for the round trip to stay under 1/255.
    """
    with torch.autocast(rgb.device.type, enabled=False):
        lab = rgb_to_lab(rgb.float().clamp(0.0, 1.0))
    L = lab[:, :1] / L_SCALE - 1.0
    ab = lab[:, 1:] / AB_SCALE
    return L, ab


def lab_normalized_to_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L, ab) in [-1, 1] -> sRGB in [0, 1]; out-of-gamut colours are clipped."""
    lab = torch.cat([(L.float() + 1.0) * L_SCALE, ab.float() * AB_SCALE], dim=1)
    with torch.autocast(lab.device.type, enabled=False):
        return lab_to_rgb(lab, clip=True)


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] -> uint8, rounded (not truncated) so a round trip is exact."""
    return images.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def gray_to_rgb(L: torch.Tensor) -> torch.Tensor:
    """Normalised L -> the neutral sRGB image with that lightness (a = b = 0)."""
    return lab_normalized_to_rgb(L, torch.zeros_like(L).expand(-1, 2, -1, -1))


def rgb_to_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> normalised L only, for grayscale inputs given as RGB."""
    return rgb_to_lab_normalized(rgb)[0]


def batch_to_lab(images: torch.Tensor, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated uint8 batch (N, 3, H, W) -> normalised (L, ab) on `device`.

    The copy happens while the batch is still uint8 (4x fewer bytes than float) and
    is non-blocking from pinned memory; the conversion then runs on the device.
    """
    if device is not None:
        images = images.to(device, non_blocking=True)
    return rgb_to_lab_normalized(uint8_to_float(images))


# -- named colour transforms ------------------------------------------------------------
# The looks an image can be given from its colour original: the synthesised domains of
# StarGAN (data=domains) and the gray side of CycleGAN (data=unpaired). Each maps sRGB
# in [0, 1], (N, 3, H, W), to sRGB in [0, 1]; `apply_color_transform` also takes uint8.


def _autocast_off(images: torch.Tensor):
    # kornia's conversions use matrix products, which autocast would run in bf16/fp16
    # (an error of ~0.02 in normalised Lab): colour maths always runs in float32.
    return torch.autocast(images.device.type, enabled=False)


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """The neutral image with the same CIE lightness: exactly what a colouriser is
    given at test time (its L), so synthesised gray inputs match real use."""
    with _autocast_off(rgb):
        return gray_to_rgb(rgb_to_lightness(rgb.float()))


def to_sepia(rgb: torch.Tensor) -> torch.Tensor:
    """The classic sepia-toning matrix on sRGB values (brown-tinted, clipped highlights)."""
    rgb = rgb.float()
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    # Written as weighted sums, not a matmul, so autocast cannot lower its precision.
    return torch.cat(
        [
            0.393 * r + 0.769 * g + 0.189 * b,
            0.349 * r + 0.686 * g + 0.168 * b,
            0.272 * r + 0.534 * g + 0.131 * b,
        ],
        dim=1,
    ).clamp(0.0, 1.0)


# Per-channel gains in linear light: a von Kries-style change of illuminant, as if the
# scene had been lit by a lower (warm) or higher (cool) colour temperature.
WARM_GAINS = (1.15, 1.0, 0.8)
COOL_GAINS = (0.85, 1.0, 1.2)


def _relight(rgb: torch.Tensor, gains: tuple[float, float, float]) -> torch.Tensor:
    from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

    with _autocast_off(rgb):
        linear = rgb_to_linear_rgb(rgb.float().clamp(0.0, 1.0))
        scale = torch.tensor(gains, dtype=linear.dtype, device=linear.device).view(1, 3, 1, 1)
        return linear_rgb_to_rgb((linear * scale).clamp(0.0, 1.0))


def to_warm(rgb: torch.Tensor) -> torch.Tensor:
    """Warmer tones: more red, less blue, in linear light."""
    return _relight(rgb, WARM_GAINS)


def to_cool(rgb: torch.Tensor) -> torch.Tensor:
    """Cooler tones: less red, more blue, in linear light."""
    return _relight(rgb, COOL_GAINS)


COLOR_TRANSFORMS = {
    "color": lambda rgb: rgb.float(),  # the photo as it is
    "gray": to_gray,
    "sepia": to_sepia,
    "warm": to_warm,
    "cool": to_cool,
}


def check_color_transform(name: str, where: str = "color transform") -> str:
    """Return `name` if it names a transform, else raise a ConfigError naming `where`."""
    from gancolor.errors import ConfigError

    if name not in COLOR_TRANSFORMS:
        raise ConfigError(f"{where} must be one of {', '.join(COLOR_TRANSFORMS)}, got {name!r}")
    return name


def apply_color_transform(name: str, images: torch.Tensor) -> torch.Tensor:
    """Apply the named transform to a batch (N, 3, H, W) of uint8 or float sRGB.

    uint8 in gives uint8 out (rounded); float in [0, 1] gives float32 in [0, 1].
    """
    transform = COLOR_TRANSFORMS[check_color_transform(name)]
    if images.dtype == torch.uint8:
        return float_to_uint8(transform(uint8_to_float(images)))
    return transform(images)


# -- the spaces nets work in ------------------------------------------------------------
# Recipes that can work in RGB or in Lab (CycleGAN, StarGAN) encode sRGB batches into a
# net's 3-channel space and decode its outputs here, so no recipe converts by hand.
# "lab": (L, ab) normalised as above; "rgb": sRGB scaled to [-1, 1] (the reference
# CycleGAN / StarGAN convention, matching a tanh output).

NET_SPACES = ("lab", "rgb")


def check_net_space(space: str, where: str = "model.color_space") -> str:
    from gancolor.errors import ConfigError

    if space not in NET_SPACES:
        raise ConfigError(f"{where} must be one of {', '.join(NET_SPACES)}, got {space!r}")
    return space


def encode(rgb: torch.Tensor, space: str) -> torch.Tensor:
    """sRGB in [0, 1], (N, 3, H, W) -> the net's 3-channel tensor in [-1, 1]."""
    if check_net_space(space) == "rgb":
        return rgb.float() * 2.0 - 1.0
    with _autocast_off(rgb):
        return torch.cat(rgb_to_lab_normalized(rgb), dim=1)


def decode(x: torch.Tensor, space: str) -> torch.Tensor:
    """A net's 3-channel tensor -> sRGB in [0, 1] (out-of-gamut colours clipped)."""
    if check_net_space(space) == "rgb":
        return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    with _autocast_off(x):
        return lab_normalized_to_rgb(x[:, :1], x[:, 1:])


def encode_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> normalised L only, float32 even under autocast."""
    with _autocast_off(rgb):
        return rgb_to_lightness(rgb.float())


def gray_from_lightness(L: torch.Tensor, space: str) -> torch.Tensor:
    """Normalised L -> the neutral image in the net's 3-channel space (colorize's input)."""
    if check_net_space(space) == "lab":
        return torch.cat([L.float(), torch.zeros_like(L, dtype=torch.float32).expand(-1, 2, -1, -1)], dim=1)
    with _autocast_off(L):
        return gray_to_rgb(L) * 2.0 - 1.0


def ab_from_net(x: torch.Tensor, space: str) -> torch.Tensor:
    """The normalised ab of a net's 3-channel output (what colorize returns)."""
    if check_net_space(space) == "lab":
        return x[:, 1:].float()
    with _autocast_off(x):
        return rgb_to_lab_normalized(decode(x, space))[1]



# -- near-infrared input ---------------------------------------------------------------
# An NIR image has no visible-light lightness to keep: the net takes its intensities as
# they are stored (8-bit / 255, 16-bit / 65535), scaled linearly to [-1, 1] like every
# other net input, and predicts the whole colour image in its 3-channel space (see
# `encode` / `decode`).


def nir_to_net(nir: torch.Tensor) -> torch.Tensor:
    """NIR intensities in [0, 1], (N, 1, H, W) -> the net's input in [-1, 1]."""
    return nir.float() * 2.0 - 1.0


def nir_from_net(x: torch.Tensor) -> torch.Tensor:
    """The net's NIR input -> the gray sRGB image in [0, 1] that shows it, (N, 3, H, W)."""
    return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0).expand(-1, 3, -1, -1)

# -- Colorful Image Colorization (Zhang et al. 2016): ab as Q classes --------------------
# CIC predicts, per pixel, a distribution over Q cells of the ab plane instead of one ab
# value, because the colour of most things is multimodal and a regression to the mean
# of the modes is the gray/sepia collapse. Everything here works on batched tensors on
# any device and computes in float32 (also under autocast). Bin centres are in Lab
# units (a, b in about [-110, 110]); the ab tensors in and out are normalised (ab / 110)
# like everywhere else in gancolor.

AB_GRID = 10.0  # cell size of the ab quantisation (the paper's grid)
CIC_GAMUT_Q = 261  # the number of cells the rule of `compute_gamut_bins` keeps at grid 10
_BIN_CHUNK = 1 << 15  # pixels per chunk of the nearest-bin search: (chunk, Q, 2) floats stay ~70 MB

# What `compute_gamut_bins(10)` yields, as (a, lowest b, highest b) per row of a (every
# row is one unbroken run of cells): the rule costs seconds of CPU, this costs nothing.
# tests/test_color_bins.py recomputes the rule and checks it gives exactly this.
_GAMUT_ROWS_10 = (
    (-90, 80, 80), (-80, 40, 80), (-70, 20, 90), (-60, 0, 90), (-50, -20, 90),
    (-40, -30, 90), (-30, -40, 90), (-20, -40, 90), (-10, -50, 90), (0, -60, 90),
    (10, -70, 80), (20, -70, 80), (30, -80, 80), (40, -90, 80), (50, -90, 70),
    (60, -100, 70), (70, -110, 70), (80, -110, 70), (90, -90, 0), (100, -70, -50),
)


def compute_gamut_bins(grid: float = AB_GRID) -> torch.Tensor:
    """The rule that picks CIC's ab bins, computed: (Q, 2) float32 centres in Lab units,
    sorted by (a, b).

    The ab plane is cut into square cells of side `grid` centred on the multiples of
    `grid`. Each of the 2**24 8-bit sRGB colours is converted to Lab exactly as training
    data are (kornia, D65, float32) and goes to the cell of its nearest centre,
    round(ab / grid) * grid; the cells that receive at least one colour are kept. So
    every 8-bit colour lands in a kept cell and every kept cell receives colours (at
    grid 10, the least populated of them receives 56).

    At grid 10 this keeps Q = 261 cells (CIC_GAMUT_Q). Zhang et al.'s published set has
    Q = 313: the paper says only "in-gamut", and their set keeps 52 cells that no 8-bit
    sRGB colour reaches (even the convex hull of the sRGB ab gamut holds only 233 grid
    centres, so theirs is a looser estimate of the gamut). Use their centres through
    `load_ab_bins` (model.bins=PATH) to train or load a model with their 313 classes.
    A few seconds of CPU: `gamut_bins` serves the grid-10 result from a table.
    """
    import math

    grid = float(grid)
    if grid <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    offset = int(math.ceil(130.0 / grid))  # |a|, |b| < 130 for every sRGB colour
    side = 2 * offset + 1
    hit = torch.zeros(side * side, dtype=torch.bool)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for r0 in range(0, 256, 32):  # 32 red levels at a time: 2M colours, ~100 MB
            r, g, b = torch.meshgrid(levels[r0 : r0 + 32], levels, levels, indexing="ij")
            lab = rgb_to_lab(torch.stack([r, g, b]).reshape(1, 3, -1, 256))
            cell = torch.round(lab[0, 1:].reshape(2, -1) / grid).long() + offset
            hit[cell[0] * side + cell[1]] = True
    index = hit.nonzero().squeeze(1)
    a, b = index // side - offset, index % side - offset
    return torch.stack([a, b], dim=1).float() * grid


_GAMUT_CACHE: dict[float, torch.Tensor] = {}


def gamut_bins(grid: float = AB_GRID) -> torch.Tensor:
    """CIC's ab bin centres by the rule of `compute_gamut_bins`: (Q, 2) float32 in Lab
    units, sorted by (a, b); Q = 261 at the paper's grid of 10 (from a table checked
    against the rule by the tests), other grids computed once per process."""
    grid = float(grid)
    if grid not in _GAMUT_CACHE:
        if grid == AB_GRID:
            rows = [(a, b) for a, lo, hi in _GAMUT_ROWS_10 for b in range(lo, hi + 1, 10)]
            _GAMUT_CACHE[grid] = torch.tensor(rows, dtype=torch.float32)
        else:
            _GAMUT_CACHE[grid] = compute_gamut_bins(grid)
    return _GAMUT_CACHE[grid].clone()


def load_ab_bins(path, where: str = "model.bins") -> torch.Tensor:
    """A Q x 2 .npy of ab bin centres (Lab units, e.g. Zhang et al.'s pts_in_hull.npy)
    -> (Q, 2) float32, or a ConfigError naming `where` and the file."""
    from pathlib import Path

    import numpy as np

    from gancolor.errors import ConfigError

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}: bins file not found: {file}")
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as exc:  # not an .npy, truncated, pickled objects...
        raise ConfigError(f"{where}: cannot read {file} as a .npy array: {' '.join(str(exc).split())[:200]}") from None
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{where}: {file} must hold a Q x 2 array of ab centres, got shape {array.shape} ({array.dtype})")
    return check_ab_bins(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), f"{where}: {file}")


def check_ab_bins(bins, where: str = "model.bins") -> torch.Tensor:
    """Bin centres given as a tensor or nested list -> (Q, 2) float32, checked: at least
    2 distinct, finite centres in Lab units. A ConfigError naming `where` otherwise."""
    from gancolor.errors import ConfigError

    try:
        bins = torch.as_tensor(bins, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{where}: bin centres must be numbers, Q x 2") from None
    if bins.dim() != 2 or bins.shape[1] != 2 or bins.shape[0] < 2:
        raise ConfigError(f"{where}: must hold a Q x 2 array of ab centres (Q >= 2), got shape {tuple(bins.shape)}")
    if not torch.isfinite(bins).all():
        raise ConfigError(f"{where}: holds non-finite values")
    if bins.abs().max() <= 1.5:
        # Normalised centres would all fall in one or two cells of the 10-grid in Lab
        # units: almost certainly written in gancolor's ab / 110 convention.
        raise ConfigError(f"{where}: looks normalised (|ab| <= 1.5); centres must be in Lab units (a, b in about [-110, 110])")
    if torch.unique(bins, dim=0).shape[0] != bins.shape[0]:
        raise ConfigError(f"{where}: repeats some bin centres")
    return bins.contiguous()


def save_ab_bins(path, bins: torch.Tensor) -> None:
    """Write (Q, 2) centres in Lab units as a float32 .npy (what `load_ab_bins` reads)."""
    import numpy as np

    np.save(path, bins.detach().cpu().float().numpy())


def nearest_bins(ab: torch.Tensor, bins: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The k bins nearest to each point, nearest first: (squared distances, indices).

    ab: (P, 2) in Lab units; bins: (Q, 2) in Lab units. Exact search by brute force in
    chunks (Q is a few hundred, so no index structure pays off), in float32 without
    matmul tricks, so ties and near-ties are ranked by true distances.
    """
    if not 1 <= k <= bins.shape[0]:
        raise ValueError(f"k must be in [1, {bins.shape[0]}], got {k}")
    with _autocast_off(ab):
        ab, bins = ab.float(), bins.to(ab.device, torch.float32)
        dists, idxs = [], []
        for chunk in ab.split(_BIN_CHUNK):
            d2 = (chunk[:, None, :] - bins[None, :, :]).pow(2).sum(-1)
            if k == 1:
                d, i = d2.min(dim=1, keepdim=True)
            else:
                d, i = d2.topk(k, dim=1, largest=False, sorted=True)
            dists.append(d)
            idxs.append(i)
        if not dists:
            return ab.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=ab.device)
        return torch.cat(dists), torch.cat(idxs)


def _pixels(ab: torch.Tensor) -> torch.Tensor:
    """Normalised (N, 2, H, W) -> (N*H*W, 2) in Lab units."""
    return ab.float().permute(0, 2, 3, 1).reshape(-1, 2) * AB_SCALE


def soft_encode(
    ab: torch.Tensor, bins: torch.Tensor, nearest: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhang et al.'s soft-encoding of ground-truth colours (sec. 2.1).

    Each pixel's ab is spread over its `nearest` bins with weights proportional to a
    Gaussian of the distance (`sigma` in Lab units), summing to 1. Returned sparsely,
    nearest bin first, as (indices (N, K, H, W) long, weights (N, K, H, W) float32):
    the dense Q-channel target is never built. `ab` is normalised, (N, 2, H, W).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    n, _, h, w = ab.shape
    with _autocast_off(ab):
        d2, idx = nearest_bins(_pixels(ab), bins, nearest)
        # Shifted by the nearest distance before exp: weights are relative, and a far
        # outlier must not underflow to all zeros.
        weights = torch.exp(-(d2 - d2[:, :1]) / (2.0 * sigma**2))
        weights = weights / weights.sum(dim=1, keepdim=True)
    unflat = lambda t: t.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return unflat(idx), unflat(weights)


def dense_soft_encoding(indices: torch.Tensor, weights: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The (N, Q, H, W) distribution that `soft_encode`'s sparse output stands for."""
    dense = weights.new_zeros(indices.shape[0], num_bins, *indices.shape[2:])
    return dense.scatter_add_(1, indices, weights)


def ab_histogram(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of normalised ab (N, 2, H, W) fall nearest to each bin: (Q,) int64."""
    _, idx = nearest_bins(_pixels(ab), bins, 1)
    return torch.bincount(idx.squeeze(1), minlength=bins.shape[0])


def smooth_prior(counts: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """The empirical colour distribution p of Zhang et al. (eq. 4), smoothed with a
    Gaussian kernel of `sigma` (Lab units) over the bins: (Q,) float32, sums to 1.

    Each bin's share is spread over the kept bins with Gaussian weights normalised per
    source bin, so no mass leaks into cells outside the gamut and p~ still sums to 1.
    """
    with _autocast_off(counts):
        counts, bins = counts.double(), bins.to(counts.device, torch.float64)
        total = counts.sum()
        if total <= 0:
            raise ValueError("the colour histogram is empty")
        kernel = torch.exp(-torch.cdist(bins, bins).pow(2) / (2.0 * sigma**2))  # (target, source)
        kernel = kernel / kernel.sum(dim=0, keepdim=True)
        return (kernel @ (counts / total)).float()


def rebalance_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Class-rebalancing weights w ~ ((1 - lambda) p~ + lambda / Q)^-1 (Zhang et al.,
    eq. 4), normalised so that their expectation under p~ is 1: sum_q p~_q w_q = 1.
    lambda = 1 gives uniform weights (no rebalancing); lambda = 0 inverts the prior."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    with _autocast_off(prior):
        prior = prior.double()
        prior = prior / prior.sum()
        mixed = (1.0 - lam) * prior + lam / prior.numel()
        # A prior with empty bins and lambda 0 would divide by zero; such bins are never
        # a nearest bin in the data, so any finite weight will do for them.
        weights = 1.0 / mixed.clamp_min(1e-12)
        return (weights / (prior * weights).sum()).float()


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
    """Decode per-pixel class logits (N, Q, H, W) to normalised ab (N, 2, H, W).

    Zhang et al.'s annealed mean (eq. 5): the mean of f_T(z) = exp(log z / T) / sum
    exp(log z / T), i.e. of softmax(logits / T). T = 1 is the distribution's mean
    (desaturated where colours are multimodal), T -> 0 its mode (vivid but patchy);
    the paper's 0.38 sits between. T <= 0 returns the mode exactly (`decode_mode`).
    Differentiable for T > 0, so an adversarial loss can train through it.
    """
    if temperature <= 0:
        return decode_mode(logits, bins)
    with _autocast_off(logits):
        probs = torch.softmax(logits.float() / float(temperature), dim=1)
        centres = bins.to(logits.device, torch.float32) / AB_SCALE
        return torch.einsum("nqhw,qc->nchw", probs, centres)


def decode_mode(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The most probable bin's centre per pixel, normalised ab (N, 2, H, W)."""
    with _autocast_off(logits):
        centres = bins.to(logits.device, torch.float32) / AB_SCALE
        return centres[logits.argmax(dim=1)].permute(0, 3, 1, 2).contiguous()
