"""loss.d_augment: DiffAugment's translation + cutout on what the discriminator sees.
Differentiable, drawn per sample, the same move for the L and ab of a pair, no change to
the colours themselves, off unless asked for; every recipe with a discriminator trains
an adversarial iteration with it."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from gancolor import color
from gancolor.augment import DiffAugment, discriminator_augment, no_augment
from gancolor.build import build, build_recipe
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss, conditional_discriminator_loss
from helpers import CONF_DIR, compose, crops, same, shrink, snapshot

RECIPES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
WITH_GAN = {"cic": ["loss.lambda_gan=0.1"]}  # cic has a discriminator only with its GAN term


@pytest.fixture
def one_thread():
    # Tiny nets gain nothing from a second thread, and lose much when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lab_pairs(photos) -> torch.Tensor:
    """(L, ab) of real photo crops, concatenated as a conditional D sees them."""
    L, ab = color.rgb_to_lab_normalized(crops(photos, size=32))
    return torch.cat([L, ab], 1)


def test_gradients_reach_every_sample_through_the_augmentation(lab_pairs):
    fake = lab_pairs.clone().requires_grad_(True)
    DiffAugment()(fake).square().sum().backward()
    per_sample = fake.grad.abs().flatten(1).sum(1)
    assert (per_sample > 0).all()


def test_a_pair_moves_as_one_image(lab_pairs):
    # Three equal channels stay equal only if L and both ab channels get the same move.
    same_in_each_channel = lab_pairs[:, :1].expand(-1, 3, -1, -1).contiguous()
    out = DiffAugment()(same_in_each_channel)
    assert not torch.equal(out, same_in_each_channel)
    torch.testing.assert_close(out[:, 1], out[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 2], out[:, 0], rtol=0, atol=0)


def test_colours_are_moved_or_cut_never_changed(lab_pairs):
    out = DiffAugment()(lab_pairs)
    for before, after in zip(lab_pairs, out):
        known = torch.cat([before.flatten(1).T, torch.zeros(1, 3)])  # every input colour, and the fill
        pixels = after.flatten(1).T
        distance = torch.cdist(pixels, known, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
        assert distance.max() < 1e-6, "a pixel came out with a colour the input does not have"
        cut = (pixels == 0).all(dim=1).float().mean()
        assert 0.1 < cut < 0.7  # the cutout square plus the translation's fill


def test_draws_are_independent_per_sample(lab_pairs):
    one = lab_pairs[:1].expand(8, -1, -1, -1).contiguous()
    out = DiffAugment()(one)
    assert len({tuple(sample.flatten().tolist()) for sample in out}) > 1


class Recorder(nn.Module):
    """A 1x1-conv patch discriminator that keeps what it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.conv(x)


def test_real_and_fake_pairs_are_both_augmented(lab_pairs):
    L, real_ab = lab_pairs[:, :1], lab_pairs[:, 1:]
    fake_ab = real_ab.flip(-1)
    recorder = Recorder()
    conditional_discriminator_loss(recorder, GANLoss("vanilla"), L, real_ab, fake_ab, DiffAugment())
    assert len(recorder.seen) == 2
    for seen, pair in zip(recorder.seen, (torch.cat([L, fake_ab], 1), torch.cat([L, real_ab], 1))):
        assert not torch.equal(seen, pair)
        assert (seen == 0).all(dim=1).any()  # cut out


def test_without_augment_the_discriminator_sees_the_pairs_as_they_are(lab_pairs):
    L, real_ab = lab_pairs[:, :1], lab_pairs[:, 1:]
    recorder = Recorder()
    conditional_discriminator_loss(recorder, GANLoss("vanilla"), L, real_ab, real_ab, discriminator_augment("none"))
    for seen in recorder.seen:
        assert torch.equal(seen, lab_pairs)


@pytest.mark.parametrize("recipe", RECIPES)
def test_off_by_default(recipe):
    cfg = compose(f"model={recipe}")
    assert cfg.loss.d_augment == "none"
    assert build_recipe(shrink(cfg)).d_augment is no_augment


def test_an_unknown_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.d_augment must be one of none, diffaugment"):
        discriminator_augment("colour_jitter")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_adversarially_with_diffaugment(recipe, small_photo_folder, one_thread):
    overrides = [f"model={recipe}", "loss.d_augment=diffaugment", *WITH_GAN.get(recipe, [])]
    data_source = [] if "root" in compose(*overrides).data else ["data=folder"]
    cfg = shrink(compose(*overrides, *data_source, f"data.root={small_photo_folder}"))
    torch.manual_seed(0)
    model = build_recipe(cfg).train()
    assert isinstance(model.d_augment, DiffAugment)
    data = build(cfg.data, "data")
    data.setup()
    optimizers = model.configure_optimizers()
    before = {name: snapshot(net) for name, net in model.named_children() if any(True for _ in net.parameters())}
    steps, state = model.adversarial_steps(), {}
    batches = itertools.cycle(data.train_loader())
    # StarGAN's G steps once per n_critic D steps: iterate until every step has run.
    for iteration in range(max(step.every for step in steps)):
        batch = data.device_batch(next(batches), "cpu")
        for step in steps:
            if (iteration + 1) % step.every == 0:
                optimizers[step.optimizer].zero_grad()
                loss, _ = step.fn(batch, state)
                loss.backward()
                optimizers[step.optimizer].step()
    unchanged = [name for name, weights in before.items() if same(weights, snapshot(getattr(model, name)))]
    assert not unchanged, f"{recipe}: an adversarial iteration with diffaugment did not train {unchanged}"
