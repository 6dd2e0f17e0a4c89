"""Image-quality metrics used by validation and `python -m gancolor.evaluate` alike.

Every function takes sRGB batches in [0, 1], (N, 3, H, W), and returns one value per
image, so callers can average over a dataset or keep per-image rows for a report.

PSNR is capped at PSNR_CAP dB: identical images would otherwise give +inf, which
poisons means and cannot be written to JSON.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

PSNR_CAP = 100.0


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().flatten(1).mean(1)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, capped at PSNR_CAP for identical images."""
    err = mse(pred, target).clamp_min(data_range**2 * 10 ** (-PSNR_CAP / 10))
    return 10.0 * torch.log10(data_range**2 / err)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; torchmetrics, 11x11 Gaussian window)."""
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, reduction="none"
    )


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


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM, MAE, MSE and the colourfulness of prediction and truth.

    The colourfulness *ratio* (mean over a set of pred / mean of truth) is what shows
    the gray-or-sepia collapse; it is a ratio of means, so `summarize` computes it.
    """
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "mae": mae(pred, target),
        "mse": mse(pred, target),
        "colorfulness": colorfulness(pred),
        "colorfulness_true": colorfulness(target),
    }


def summarize(per_image: dict[str, list[torch.Tensor] | torch.Tensor]) -> dict[str, float]:
    """Means over a dataset of `image_metrics` outputs, plus the colourfulness ratio."""
    means = {}
    for name, values in per_image.items():
        values = torch.cat(list(values)) if isinstance(values, (list, tuple)) else values
        means[name] = float(values.float().mean())
    if "colorfulness" in means and "colorfulness_true" in means:
        means["colorfulness_ratio"] = means["colorfulness"] / max(means["colorfulness_true"], 1e-8)
    return means
