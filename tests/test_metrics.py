"""Metric values on cases whose answer is known, and LPIPS/FID without any download."""

import math

import pytest
import torch

from gancolor import metrics as M
from gancolor.metrics import (
    HIST_BINS,
    PSNR_CAP,
    MetricUnavailable,
    ab_histograms,
    colorfulness,
    histogram_intersection,
    image_metrics,
    mae,
    mse,
    psnr,
    ssim,
    summarize,
)


def _photo_like(n: int = 2, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def _solid(rgb: tuple[float, float, float], size: int = 16) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_identical_images_score_perfectly():
    x = _photo_like()
    values = image_metrics(x, x.clone())
    assert torch.allclose(values["ssim"], torch.ones(2), atol=1e-5)
    # PSNR of identical images is +inf mathematically; it is capped (documented) so
    # means and JSON stay finite.
    assert torch.equal(values["psnr"], torch.full((2,), PSNR_CAP))
    assert torch.equal(values["mae"], torch.zeros(2)) and torch.equal(values["mse"], torch.zeros(2))
    summary = summarize({k: [v] for k, v in values.items()})
    assert summary["hist_intersection_a"] == pytest.approx(1.0)
    assert summary["hist_intersection_b"] == pytest.approx(1.0)
    assert summary["colorfulness_ratio"] == pytest.approx(1.0)
    assert summary["psnr"] == PSNR_CAP and math.isfinite(summary["psnr"])


def test_constant_shift_gives_the_known_errors():
    target = 0.2 + 0.6 * _photo_like()  # in [0.2, 0.8]: the shift never leaves [0, 1]
    pred = target + 0.1
    assert torch.allclose(mae(pred, target), torch.full((2,), 0.1), atol=1e-6)
    assert torch.allclose(mse(pred, target), torch.full((2,), 0.01), atol=1e-6)
    assert torch.allclose(psnr(pred, target), torch.full((2,), 20.0), atol=1e-4)  # 10 log10(1 / 0.01)
    assert (ssim(pred, target) < 1).all()


def test_ssim_is_torchmetrics_ssim_on_real_photos(photos):
    # metrics.ssim is kornia's (lighter to import); it must stay the number papers report.
    from torchmetrics.functional.image import structural_similarity_index_measure

    truth = torch.stack([torch.from_numpy(p[:96, :128]).permute(2, 0, 1).float() / 255 for p in photos])
    noisy = (truth + 0.15 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    expected = structural_similarity_index_measure(noisy, truth, data_range=1.0, reduction="none")
    assert torch.allclose(ssim(noisy, truth), expected, atol=1e-5)
    assert (expected < 0.9).all()  # a case where the window's shape matters


def test_colorfulness_of_known_images():
    assert colorfulness(_solid((0.5, 0.5, 0.5))).item() == pytest.approx(0.0, abs=1e-4)
    # Solid red: rg = 255, yb = 127.5, no spread: M = 0.3 * sqrt(255^2 + 127.5^2).
    assert colorfulness(_solid((1.0, 0.0, 0.0))).item() == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-5)
    # Half red / half green: rg = +-255 (sigma 255, mean 0), yb = 127.5 (no spread).
    half = torch.zeros(1, 3, 8, 8)
    half[:, 0, :, :4] = 1.0
    half[:, 1, :, 4:] = 1.0
    assert colorfulness(half).item() == pytest.approx(255 + 0.3 * 127.5, rel=1e-5)


def test_histogram_intersection_known_cases():
    gray, red, blue = _solid((0.5, 0.5, 0.5)), _solid((1.0, 0.0, 0.0)), _solid((0.0, 0.0, 1.0))
    hist = ab_histograms(torch.cat([gray, red]))
    assert hist.shape == (2, 2, HIST_BINS)
    assert torch.equal(hist.sum(-1), torch.full((2, 2), 16.0 * 16))
    # A neutral gray sits in the a = 0 and b = 0 bins.
    assert hist[0, 0, HIST_BINS // 2] == 256 and hist[0, 1, HIST_BINS // 2] == 256
    assert histogram_intersection(hist[1], hist[1]).tolist() == pytest.approx([1.0, 1.0])
    assert histogram_intersection(hist[0], hist[1]).tolist() == pytest.approx([0.0, 0.0])
    # Half the pixels right: intersection 0.5 on both channels.
    half = torch.cat([red[..., :8], gray[..., 8:]], dim=-1)
    assert histogram_intersection(ab_histograms(half)[0], ab_histograms(red)[0]).tolist() == pytest.approx([0.5, 0.5])
    # Red and blue differ in both a and b.
    assert histogram_intersection(ab_histograms(red)[0], ab_histograms(blue)[0]).max() == 0


def test_summarize_pools_histograms_over_the_set():
    red, green = _solid((1.0, 0.0, 0.0)), _solid((0.0, 1.0, 0.0))
    # Each image is wrong, but the set's colour distribution is exactly right: the
    # dataset-level measure (as published) is 1, the per-image one would be 0.
    values = image_metrics(torch.cat([red, green]), torch.cat([green, red]))
    summary = summarize({k: [v[:1], v[1:]] for k, v in values.items()})
    assert summary["hist_intersection_a"] == pytest.approx(1.0)
    assert summary["hist_intersection_b"] == pytest.approx(1.0)
    assert histogram_intersection(values["ab_hist"], values["ab_hist_true"]).max() == 0
    # The trainer logs summarize's output as is: plain floats, no histogram arrays.
    assert all(isinstance(v, float) for v in summary.values())
    assert {"psnr", "ssim", "mae", "mse", "colorfulness", "colorfulness_true", "colorfulness_ratio"} <= set(summary)
    assert not set(summary) & {"ab_hist", "ab_hist_true"}


def test_validation_and_evaluation_share_the_metric_functions():
    import gancolor.evaluate
    import gancolor.validation

    assert gancolor.validation.image_metrics is M.image_metrics
    assert gancolor.validation.summarize is M.summarize


# -- LPIPS / FID: local weights only -------------------------------------------------


@pytest.fixture(scope="module")
def alexnet_features(tmp_path_factory):
    """A torchvision-format AlexNet `features.*` state dict (random: the values do not
    matter for what is tested), as safetensors and as a plain torch file."""
    from safetensors.torch import save_file
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    folder = tmp_path_factory.mktemp("weights")
    save_file(state, str(folder / "alex.safetensors"))
    torch.save(state, folder / "alex.pth")
    return folder


def test_missing_weights_read_unavailable_without_a_download(offline, tmp_path):
    with pytest.raises(MetricUnavailable) as info:
        M.load_lpips("auto")
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(info.value) == f"unavailable: weights not found at {expected} (set lpips.weights=PATH)"
    with pytest.raises(MetricUnavailable, match=r"^unavailable: weights not found at /no/such/inception.pth"):
        M.load_inception_distances("/no/such/inception.pth")
    with pytest.raises(MetricUnavailable) as info:
        M.load_inception_distances("auto")
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    assert str(info.value).startswith(f"unavailable: weights not found at {expected} (set fid.weights=PATH")
    with pytest.raises(MetricUnavailable, match=r"^unavailable: turned off"):
        M.load_lpips(None)


def test_lpips_from_local_weights(offline, alexnet_features):
    x = _photo_like(2, 64)
    y = _photo_like(2, 64, seed=1)
    for name in ("alex.safetensors", "alex.pth"):
        lpips = M.load_lpips(str(alexnet_features / name))
        same, different = lpips(x, x), lpips(x, y)
        assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
        assert (different > 0).all()


def test_unusable_weight_files_read_unavailable(offline, alexnet_features, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(MetricUnavailable, match="^unavailable: cannot read weights"):
        M.load_lpips(str(broken))
    with pytest.raises(MetricUnavailable, match="does not fit the LPIPS backbone"):
        M.load_lpips(str(alexnet_features / "alex.pth"), net="vgg")
    with pytest.raises(MetricUnavailable, match="does not hold TF-Inception-v3 weights .* nor torchvision's"):
        M.load_inception_distances(str(alexnet_features / "alex.safetensors"))


@pytest.mark.slow
def test_fid_from_local_weights(offline, tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    # Random weights: this checks the plumbing (local file -> features -> torchmetrics'
    # FID), not FID's value, which needs the real ImageNet weights and many images.
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "inception.safetensors"))
    distances = M.load_inception_distances(str(tmp_path / "inception.safetensors"))
    assert distances.info["comparable_with_papers"] is False  # torchvision's layout: labelled as such
    x = _photo_like(3, 64)
    distances.update(x, real=True)
    distances.update(x, real=False)
    value = float(distances.fid.compute())
    assert math.isfinite(value) and value == pytest.approx(0.0, abs=1e-3)


# -- FID against answers known in closed form ------------------------------------------


class Projection(torch.nn.Module):
    """A fixed linear map of the flattened image to `num_features`: Gaussian images
    give Gaussian features whose Frechet distance is known in closed form."""

    def __init__(self, in_features: int, num_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_features = num_features
        self.register_buffer("weight", scale * torch.randn(in_features, num_features, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


def _gaussian_images(n: int, shift: float = 0.0, spread: float = 1.0, seed: int = 1) -> torch.Tensor:
    return shift + spread * torch.randn(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def _frechet_distance(a, b) -> float:
    """sum (mu_a - mu_b)^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), from the samples, with scipy."""
    import numpy as np
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_fid_is_the_frechet_distance_of_the_features():
    projection = Projection(12, 4)
    real, fake = _gaussian_images(3000), _gaussian_images(3000, shift=0.3, spread=0.5, seed=2)
    fid = M.fid_metric(projection)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    value = M.fid_value(fid)
    # Exactly the distance of the Gaussians fitted to the features ...
    assert value == pytest.approx(_frechet_distance(projection(real), projection(fake)), rel=1e-4)
    # ... which estimates the population's: features W^T x of x ~ N(m 1, s^2 I) are
    # N(m W^T 1, s^2 W^T W), so FID = m^2 |W^T 1|^2 + (1 - s)^2 Tr(W^T W).
    w = projection.weight.double()
    expected = 0.3**2 * float((w.sum(0) ** 2).sum()) + (1 - 0.5) ** 2 * float((w * w).sum())
    assert value == pytest.approx(expected, rel=0.1)


def test_fid_of_too_few_images_or_flat_features_is_unavailable():
    few = M.fid_metric(Projection(12, 64))
    few.update(_gaussian_images(19), real=True)
    few.update(_gaussian_images(19, shift=1.0, seed=2), real=False)
    with pytest.raises(MetricUnavailable, match="19 images; FID needs at least 2048"):
        M.fid_value(few)
    assert math.isfinite(M.fid_value(few, force=True))
    # What untrained Inception weights do: features that hardly vary, a "distance" of ~1e-14.
    flat = M.fid_metric(Projection(12, 4, scale=1e-8))
    flat.update(_gaussian_images(200), real=True)
    flat.update(_gaussian_images(200, shift=1.0, seed=2), real=False)
    assert float(flat.compute()) < 1e-10
    with pytest.raises(MetricUnavailable, match="features barely vary"):
        M.fid_value(flat, force=True)


def test_evaluate_keeps_the_real_features_for_every_checkpoint():
    projection = Projection(12, 4)
    real = _gaussian_images(500)
    fakes = [_gaussian_images(500, shift=0.5, seed=2), _gaussian_images(500, spread=2.0, seed=3)]
    distances = M.InceptionDistances(projection, fid_force=True)  # as evaluate uses it, one compute per checkpoint
    distances.update(real, real=True)
    values = []
    for fake in fakes:
        distances.update(fake, real=False)
        values.append(distances.compute()["fid"])
    for value, fake in zip(values, fakes):
        assert value == pytest.approx(_frechet_distance(projection(real), projection(fake)), rel=1e-4)
