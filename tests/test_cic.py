"""Zhang et al.'s classification model: soft-encoding, rebalancing, decoding, the
recipe's steps and prior, and `python -m gancolor model=cic` end to end."""

import json
import math
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gancolor import color
from gancolor.color import batch_to_lab
from gancolor.errors import ConfigError
from gancolor.losses import rebalanced_cross_entropy
from gancolor.models.cic import CIC, PRIOR_FILE
from gancolor.nets import CICNet, PatchDiscriminator
from gancolor.trainer import Trainer
from helpers import same, snapshot
from warm import run_gancolor



@pytest.fixture(scope="module")
def bins() -> torch.Tensor:
    return color.gamut_bins()


@pytest.fixture
def batch(photos):
    crops = torch.stack([torch.from_numpy(p[100:132, 100:132]).permute(2, 0, 1) for p in photos])
    L, ab = batch_to_lab(crops, "cpu")
    return {"L": L, "ab": ab}


# -- soft-encoding ---------------------------------------------------------------------


def test_soft_encoding_sums_to_one_and_peaks_at_the_nearest_bin(batch, bins):
    ab = batch["ab"]
    indices, weights = color.soft_encode(ab, bins, nearest=5, sigma=5.0)
    assert indices.shape == weights.shape == (ab.shape[0], 5, *ab.shape[2:])
    assert torch.allclose(weights.sum(1), torch.ones(1), atol=1e-6)
    # The nearest bin by brute force over all of them gets the largest weight.
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2) * color.AB_SCALE
    brute = torch.cdist(points.double(), bins.double()).argmin(1)
    assert torch.equal(indices[:, 0].reshape(-1), brute)
    assert (weights[:, :1] >= weights[:, 1:]).all()
    # Weights fall off as a Gaussian of the distance, sigma 5.
    centres = bins[indices.permute(0, 2, 3, 1).reshape(-1, 5)]
    d2 = (centres - points[:, None]).pow(2).sum(-1)
    ratio = weights.permute(0, 2, 3, 1).reshape(-1, 5) / weights.permute(0, 2, 3, 1).reshape(-1, 5)[:, :1]
    assert torch.allclose(ratio, torch.exp(-(d2 - d2[:, :1]) / 50.0), atol=1e-5)
    # Dense, it is a distribution over the Q bins whose mode is the nearest bin.
    dense = color.dense_soft_encoding(indices, weights, len(bins))
    assert dense.shape == (ab.shape[0], len(bins), *ab.shape[2:])
    assert torch.allclose(dense.sum(1), torch.ones(1), atol=1e-6)
    assert torch.equal(dense.argmax(1), indices[:, 0])


def test_a_colour_on_a_bin_centre_weighs_its_four_grid_neighbours_equally(bins):
    ab = torch.tensor([[0.0, 0.0]]).view(1, 2, 1, 1)  # gray: the centre of bin (0, 0), deep inside the gamut
    indices, weights = color.soft_encode(ab, bins)
    assert bins[indices[0, 0, 0, 0]].tolist() == [0.0, 0.0]
    expected = 1.0 / (1.0 + 4.0 * math.exp(-100.0 / 50.0))
    assert weights[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(weights[0, 1:], weights[0, 1:2].expand(4, 1, 1))


def test_soft_encoding_runs_in_float32_under_autocast(batch, bins):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, weights = color.soft_encode(batch["ab"].bfloat16(), bins)
    assert weights.dtype == torch.float32


# -- class rebalancing -------------------------------------------------------------------


def test_rebalancing_weights_have_mean_one_under_the_prior(bins):
    counts = torch.randint(0, 1000, (len(bins),)) ** 2  # skewed, with some empty bins
    prior = color.smooth_prior(counts, bins, sigma=5.0)
    assert prior.shape == (len(bins),) and (prior > 0).all()
    assert prior.sum().item() == pytest.approx(1.0, abs=1e-5)
    for lam in (0.0, 0.5, 1.0):
        w = color.rebalance_weights(prior, lam)
        assert (prior * w).sum().item() == pytest.approx(1.0, abs=1e-5)
    w = color.rebalance_weights(prior, 0.5)
    order = prior.argsort()
    assert (w[order][:-1] >= w[order][1:] - 1e-6).all(), "rarer colours must weigh more"
    assert torch.allclose(color.rebalance_weights(prior, 1.0), torch.ones(len(bins)), atol=1e-5)


def test_smoothing_spreads_a_single_bin_to_its_neighbours_only(bins):
    counts = torch.zeros(len(bins))
    gray = int(((bins - 0).abs().sum(1)).argmin())
    counts[gray] = 10
    prior = color.smooth_prior(counts, bins, sigma=5.0)
    distance = (bins - bins[gray]).norm(dim=1)
    assert prior[gray] == prior.max() and prior[gray] < 1
    assert prior[distance > 30].max() < 1e-6  # a Gaussian of sigma 5 is ~0 beyond 6 sigma


# -- decoding ------------------------------------------------------------------------------


def test_annealed_mean_is_the_mode_as_t_goes_to_0_and_the_mean_at_1(bins):
    torch.manual_seed(0)
    logits = torch.randn(2, len(bins), 3, 5) * 3
    # A clear winner per pixel (by 1 logit), so the T -> 0 limit is reached at T = 1e-3.
    top = torch.randint(len(bins), (2, 1, 3, 5))
    logits.scatter_(1, top, logits.amax(1, keepdim=True) + 1.0)
    mean = torch.einsum("nqhw,qc->nchw", logits.softmax(1), bins / color.AB_SCALE)
    assert torch.allclose(color.annealed_mean(logits, bins, 1.0), mean, atol=1e-6)
    mode = color.decode_mode(logits, bins)
    assert torch.equal(mode, (bins[logits.argmax(1)] / color.AB_SCALE).permute(0, 3, 1, 2))
    assert torch.allclose(color.annealed_mean(logits, bins, 1e-3), mode, atol=1e-4)
    assert torch.equal(color.annealed_mean(logits, bins, 0.0), mode)
    # Lower T, more saturated: between the mean and the mode.
    chroma = lambda ab: ab.norm(dim=1).mean().item()  # noqa: E731
    assert chroma(mean) < chroma(color.annealed_mean(logits, bins, 0.38)) < chroma(mode) + 1e-6


def test_annealed_mean_is_differentiable_and_float32_under_autocast(bins):
    logits = torch.randn(1, len(bins), 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ab = color.annealed_mean(logits.bfloat16(), bins, 0.38)
    assert ab.dtype == torch.float32
    ab.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# -- the loss ------------------------------------------------------------------------------


def test_rebalanced_cross_entropy_is_eq_2(bins):
    torch.manual_seed(0)
    logits = torch.randn(2, len(bins), 4, 4)
    ab = torch.rand(2, 2, 4, 4) * 0.6 - 0.3
    indices, weights = color.soft_encode(ab, bins)
    v = torch.rand(2, 4, 4) + 0.5
    dense = color.dense_soft_encoding(indices, weights, len(bins))
    expected = (-(dense * logits.log_softmax(1)).sum(1) * v).mean()
    assert rebalanced_cross_entropy(logits, indices, weights, v).item() == pytest.approx(expected.item(), rel=1e-5)
    # One-hot targets and unit weights: plain cross-entropy.
    hard = indices[:, :1]
    one = torch.ones_like(hard, dtype=torch.float32)
    assert rebalanced_cross_entropy(logits, hard, one).item() == pytest.approx(
        F.cross_entropy(logits, hard[:, 0]).item(), rel=1e-5
    )


# -- the recipe ----------------------------------------------------------------------------


def make_cic(lambda_gan: float = 0.0, bins_path=None) -> CIC:
    torch.manual_seed(0)
    return CIC(
        generator=partial(CICNet, width_mult=0.125),
        discriminator=partial(PatchDiscriminator, ndf=8),
        loss={"nearest": 5, "sigma": 5.0, "lambda_rebalance": 0.5, "temperature": 0.38, "lambda_gan": lambda_gan},
        bins=bins_path,
        lr=1e-3,
    )


def test_q_follows_the_bins_in_use(tmp_path):
    assert make_cic().generator.out_channels == 261
    pts = np.array([(a, b) for a in range(-110, 120, 10) for b in range(-110, 120, 10)], dtype=np.float32)[:313]
    np.save(tmp_path / "pts.npy", pts)
    recipe = make_cic(bins_path=str(tmp_path / "pts.npy"))
    assert recipe.num_bins == recipe.generator.out_channels == 313 and recipe.bins.shape == (313, 2)
    assert recipe.colorize(torch.zeros(1, 1, 20, 12)).shape == (1, 2, 20, 12)
    # The centres themselves (e.g. a checkpoint's bins buffer, when the file is gone).
    from omegaconf import OmegaConf

    rebuilt = make_cic(bins_path=OmegaConf.create({"b": recipe.bins.tolist()}).b)
    assert rebuilt.num_bins == 313 and torch.equal(rebuilt.bins, recipe.bins)


def test_without_a_gan_term_every_phase_is_the_cross_entropy_step(batch):
    recipe = make_cic()
    assert recipe.discriminator is None
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    assert set(trainer.optimizers) == {"G"}
    assert [s.name for s in recipe.adversarial_steps()] == [s.name for s in recipe.pretrain_steps()] == ["G"]
    g0 = snapshot(recipe.generator)
    logs = trainer.train_iteration(recipe.pretrain_steps(), batch, 0)
    assert set(logs) == {"G/loss", "G/ce"} and torch.isfinite(logs["G/loss"])
    assert not same(g0, snapshot(recipe.generator))
    with pytest.raises(ConfigError, match="no critic phase"):
        recipe.critic_steps()


def test_gan_term_trains_d_then_g_against_a_frozen_d(batch):
    recipe = make_cic(lambda_gan=0.1)
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    assert set(trainer.optimizers) == {"G", "D"}
    seen = {}
    trainer.optimizers["D"].register_step_post_hook(
        lambda *_: seen.update(G=snapshot(recipe.generator), D=snapshot(recipe.discriminator))
    )
    g0, d0 = snapshot(recipe.generator), snapshot(recipe.discriminator)
    logs = trainer.train_iteration(recipe.adversarial_steps(), batch, 0)
    assert not same(d0, seen["D"]) and same(g0, seen["G"])
    assert not same(seen["G"], snapshot(recipe.generator)) and same(seen["D"], snapshot(recipe.discriminator))
    assert {"D/loss", "D/out_real", "D/out_fake", "G/loss", "G/ce", "G/gan"} <= set(logs)
    assert logs["G/loss"].item() == pytest.approx((logs["G/ce"] + 0.1 * logs["G/gan"]).item(), rel=1e-5)
    # The critic phase trains D alone against the frozen G.
    g1 = snapshot(recipe.generator)
    trainer.train_iteration(recipe.critic_steps(), batch, 1)
    assert same(g1, snapshot(recipe.generator))


class FakeData:
    """What on_fit_start reads from trainer.data: a loader of raw uint8 batches."""

    def __init__(self, photos):
        self.crops = torch.stack([torch.from_numpy(p[:64, :64]).permute(2, 0, 1) for p in photos])
        self.passes = 0

    def train_loader(self):
        self.passes += 1
        return [{"rgb": self.crops[:2]}, {"rgb": self.crops[2:]}]

    def device_batch(self, raw, device):
        L, ab = batch_to_lab(raw["rgb"], device)
        return {"L": L, "ab": ab}


def test_prior_is_computed_once_cached_in_the_run_folder_and_kept_in_checkpoints(tmp_path, photos):
    data = FakeData(photos)
    trainer = SimpleNamespace(data=data, run_dir=tmp_path, device=torch.device("cpu"), critic_pretrain_epochs=0)
    recipe = make_cic()
    recipe.on_fit_start(trainer)
    assert data.passes == 1 and (tmp_path / PRIOR_FILE).is_file()
    assert (recipe.prior * recipe.class_weights).sum().item() == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(recipe.class_weights, torch.ones_like(recipe.class_weights))
    cached = torch.load(tmp_path / PRIOR_FILE, weights_only=True)
    assert int(cached["counts"].sum()) == 4 * 64 * 64 and cached["images"] == 4

    again = make_cic()
    again.on_fit_start(trainer)  # e.g. a resumed run: read, not recomputed
    assert data.passes == 1
    assert torch.equal(again.class_weights, recipe.class_weights)

    state = recipe.state_dict()
    assert {"bins", "prior", "class_weights"} <= set(state)
    fresh = make_cic()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.class_weights, recipe.class_weights)


def test_a_critic_phase_without_a_discriminator_is_refused_before_training(tmp_path, photos):
    trainer = SimpleNamespace(data=FakeData(photos), run_dir=tmp_path, device="cpu", critic_pretrain_epochs=1)
    with pytest.raises(ConfigError, match="critic_pretrain_epochs"):
        make_cic().on_fit_start(trainer)


def test_colorize_decodes_at_the_temperature_attribute(batch):
    recipe = make_cic().eval()
    assert recipe.temperature == pytest.approx(0.38)
    soft = recipe.colorize(batch["L"])
    assert soft.shape == batch["ab"].shape and soft.abs().max() <= 1.0
    recipe.temperature = 0.0  # the mode: every pixel is a bin centre
    mode = recipe.colorize(batch["L"]) * color.AB_SCALE
    centres = {tuple(c) for c in recipe.bins.tolist()}
    assert {tuple(v) for v in mode.permute(0, 2, 3, 1).reshape(-1, 2).round().tolist()} <= centres


@pytest.mark.parametrize(
    "loss, message",
    [({"nearest": 0}, "loss.nearest"), ({"lambda_rebalance": 2.0}, "loss.lambda_rebalance"), ({"temperature": 0}, "loss.temperature")],
)
def test_bad_loss_settings_are_config_errors(loss, message):
    with pytest.raises(ConfigError, match=message):
        CIC(generator=partial(CICNet, width_mult=0.125), discriminator=None, loss=loss)


def test_cic_net_keeps_any_input_size():
    net = CICNet(out_channels=261, width_mult=0.125)
    for size in [(17, 23), (32, 32), (45, 9)]:
        assert net(torch.randn(2, 1, *size)).shape == (2, 261, *size)


# -- end to end ----------------------------------------------------------------------------

TINY = [
    "data.image_size=32",
    "data.batch_size=2",
    "data.repeats=1",
    "trainer.max_epochs=2",
    "trainer.pretrain_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=2",
    "trainer.progress_bar=false",
    "logger=none",
]


@pytest.mark.slow
def test_cic_with_a_dynamic_unet_and_a_gan_term_trains_end_to_end(tmp_path, cache):
    # One run for the whole CIC path through the command line: the prior file, both
    # phases, the GAN term, validation and a checkpoint that rebuilds (the other nets
    # and the no-GAN schedule are tested in-process above).
    from gancolor.checkpoint import load_recipe

    args = [
        "model=cic",
        "generator=dynamic_unet",
        "generator.decoder_width_mult=0.125",
        "generator.encoder.weights=false",
        "discriminator.ndf=8",
        "loss.lambda_gan=0.1",
        *TINY,
    ]
    result = run_gancolor(args, cwd=tmp_path, cache=cache, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "cic").iterdir()
    assert (run / PRIOR_FILE).is_file() and (run / "checkpoints" / "last.pt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/G/gan" in r and r["phase"] == 2 for r in rows)
    assert any("train/G/ce" in r and r["phase"] == 0 for r in rows)
    assert not any("train/D/loss" in r for r in rows if r.get("phase") == 0)  # pretraining: G alone
    val = [r for r in rows if "val/colorfulness_ratio" in r]
    assert len(val) == 2 and all(math.isfinite(r["val/psnr"]) for r in val)

    recipe, ckpt = load_recipe(run / "checkpoints" / "last.pt")
    assert ckpt["recipe"] == "cic" and recipe.generator.out_channels == 261
    cached = torch.load(run / PRIOR_FILE, weights_only=True)
    expected = color.rebalance_weights(color.smooth_prior(cached["counts"], recipe.bins, 5.0), 0.5)
    assert torch.allclose(recipe.class_weights, expected, atol=1e-6)
    recipe.temperature = 1.0
    assert recipe.colorize(torch.zeros(1, 1, 24, 40)).shape == (1, 2, 24, 40)


def test_colorize_temperature_option_reaches_cic_and_is_refused_elsewhere():
    from gancolor.colorize import apply_temperature, temperature_option
    from gancolor.errors import ConfigError

    class Recipe:
        name = "cic"
        temperature = 0.38

    recipe = Recipe()
    apply_temperature(recipe, temperature_option("0.1"))
    assert recipe.temperature == 0.1
    with pytest.raises(ConfigError, match="model=cic"):
        apply_temperature(type("P", (), {"name": "pix2pix"})(), 0.2)
    with pytest.raises(ConfigError, match=">= 0"):
        temperature_option(-1)
