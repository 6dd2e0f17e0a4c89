"""One pretrain step and one adversarial iteration change exactly what they should."""

import pytest
import torch

from gancolor.color import batch_to_lab
from gancolor.models.pix2pix import Pix2Pix
from gancolor.nets import PatchDiscriminator, UNetGenerator
from gancolor.trainer import Trainer
from helpers import same, snapshot


@pytest.fixture
def setup(photos):
    torch.manual_seed(0)
    recipe = Pix2Pix(
        generator=UNetGenerator(ngf=8, image_size=32),
        discriminator=PatchDiscriminator(ndf=8),
        loss={"gan_mode": "vanilla", "lambda_L1": 100.0, "pretrain_loss": "mse"},
    )
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    crops = torch.stack([torch.from_numpy(p[100:132, 100:132]).permute(2, 0, 1) for p in photos])
    L, ab = batch_to_lab(crops, "cpu")
    return trainer, recipe, {"L": L, "ab": ab}


def test_pretrain_step_trains_the_generator_only(setup):
    trainer, recipe, batch = setup
    g0, d0 = snapshot(recipe.generator), snapshot(recipe.discriminator)
    logs = trainer.train_iteration(recipe.pretrain_steps(), batch, iteration=0)
    assert set(logs) == {"G/pixel"}
    assert not same(g0, snapshot(recipe.generator))
    assert same(d0, snapshot(recipe.discriminator))
    assert all(p.grad is None for p in recipe.discriminator.parameters())


def test_adversarial_iteration_freezes_d_during_the_g_step(setup):
    trainer, recipe, batch = setup
    g0, d0 = snapshot(recipe.generator), snapshot(recipe.discriminator)
    seen = {}

    def after_d_step(optimizer, args, kwargs):
        seen["G"], seen["D"] = snapshot(recipe.generator), snapshot(recipe.discriminator)

    trainer.optimizers["D"].register_step_post_hook(after_d_step)
    logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration=0)

    # The D step moved D and left G alone.
    assert not same(d0, seen["D"]) and same(g0, seen["G"])
    # The G step moved G and left D exactly where the D step put it.
    assert not same(seen["G"], snapshot(recipe.generator))
    assert same(seen["D"], snapshot(recipe.discriminator))
    # D is trainable again for the next iteration.
    assert all(p.requires_grad for p in recipe.discriminator.parameters())
    assert {"D/loss", "D/out_real", "D/out_fake", "G/loss", "G/gan", "G/L1"} <= set(logs)
    assert all(torch.isfinite(v) for v in logs.values())
    expected = logs["G/gan"] + 100.0 * logs["G/L1"]
    assert logs["G/loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_iteration_runs_on_cpu(setup, precision):
    _, recipe, batch = setup
    trainer = Trainer(device="cpu", precision=precision, progress_bar=False)
    trainer.setup(recipe)
    g0 = snapshot(recipe.generator)
    # fp16's GradScaler starts at scale 2**16 and skips steps whose gradients overflow
    # while it backs off; within a few iterations it must settle and G must move.
    for iteration in range(20):
        logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration=iteration)
        if not same(g0, snapshot(recipe.generator)):
            break
    assert all(torch.isfinite(v) for v in logs.values())
    assert not same(g0, snapshot(recipe.generator))
    assert trainer.scaler.is_enabled() == (precision == "16-mixed")


def test_critic_phase_trains_the_discriminator_against_a_frozen_generator(setup):
    trainer, recipe, batch = setup
    trainer.pretrain_epochs, trainer.critic_pretrain_epochs = 1, 2
    assert [trainer.phase(e) for e in range(4)] == ["pretrain", "critic", "critic", "adversarial"]
    g0, d0 = snapshot(recipe.generator), snapshot(recipe.discriminator)
    logs = trainer.train_iteration(trainer.steps_for("critic"), batch, iteration=0)
    assert set(logs) >= {"D/loss", "D/out_real", "D/out_fake"} and not any(k.startswith("G/") for k in logs)
    assert same(g0, snapshot(recipe.generator)) and not same(d0, snapshot(recipe.discriminator))
    assert all(p.grad is None for p in recipe.generator.parameters())


def test_freeze_schedule_holds_a_submodule_for_its_first_epochs(setup):
    _, recipe, batch = setup
    trainer = Trainer(device="cpu", progress_bar=False, freeze_epochs={"generator.down.0": 1})
    trainer.setup(recipe)
    first = recipe.generator.down[0]
    trainer.apply_freeze_schedule(0)
    before, rest = snapshot(first), snapshot(recipe.generator.up)
    trainer.train_iteration(recipe.pretrain_steps(), batch, 0)
    assert same(before, snapshot(first)) and not same(rest, snapshot(recipe.generator.up))
    trainer.apply_freeze_schedule(1)
    trainer.train_iteration(recipe.pretrain_steps(), batch, 1)
    assert not same(before, snapshot(first))

    from gancolor.errors import ConfigError

    wrong = Trainer(device="cpu", progress_bar=False, freeze_epochs={"generator.encoderr": 1})
    wrong.setup(recipe)
    with pytest.raises(ConfigError, match="no submodule 'generator.encoderr'"):
        wrong.apply_freeze_schedule(0)


def test_log_means_count_each_key_on_its_own():
    from gancolor.loggers import Logger

    class Capture(Logger):
        def __init__(self):
            self.rows = []

        def log_metrics(self, metrics, step):
            self.rows.append(metrics)

    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.optimizers, trainer.logger = {}, Capture()
    trainer.accumulate({"D/loss": torch.tensor(1.0), "G/loss": torch.tensor(4.0)})
    trainer.accumulate({"D/loss": torch.tensor(3.0)})  # G ran every other iteration only
    means = trainer.flush_logs(epoch=0, phase="adversarial", images=2, tick=0.0)
    assert means["train/D/loss"] == 2.0 and means["train/G/loss"] == 4.0
    assert trainer.log_sums == {} and trainer.log_counts == {}
