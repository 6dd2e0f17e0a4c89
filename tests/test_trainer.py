"""The training loop itself, in process, on a recipe of three 1x1 convolutions: which
phase runs in which epoch, the freeze schedule, every LR policy epoch by epoch (and
across a resume), max_steps, and how often metrics are logged."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader

from gancolor.checkpoint import load_checkpoint
from gancolor.data import lab_batch
from gancolor.data.sampling import EpochSampler
from gancolor.errors import ConfigError
from gancolor.faults import CheckpointWriteError, TrainingDiverged
from gancolor.loggers import JsonlLogger, Logger
from gancolor.models.base import Recipe, Step
from gancolor.trainer import PHASES, Trainer
from helpers import strip_speed

G_LR, D_LR = 0.1, 0.2


class TinyRecipe(Recipe):
    """G: L -> ab, D: (L, ab) -> score; colorize ignores the nets, so validation
    metrics stay the same all run (what the plateau policy needs to be predictable)."""

    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 2, 1))
        self.discriminator = nn.Conv2d(3, 1, 1)

    def configure_optimizers(self):
        return {
            "G": torch.optim.SGD(self.generator.parameters(), lr=G_LR),
            "D": torch.optim.SGD(self.discriminator.parameters(), lr=D_LR),
        }

    def pixel(self, batch, state):
        loss = (self.generator(batch["L"]) - batch["ab"]).abs().mean()
        return loss, {"loss": loss.detach()}

    def critic(self, batch, state):
        fake = self.generator(batch["L"])
        real_score = self.discriminator(torch.cat([batch["L"], batch["ab"]], 1)).mean()
        fake_score = self.discriminator(torch.cat([batch["L"], fake.detach()], 1)).mean()
        loss = fake_score - real_score
        return loss, {"loss": loss.detach()}

    def fool(self, batch, state):
        loss = -self.discriminator(torch.cat([batch["L"], self.generator(batch["L"])], 1)).mean()
        return loss, {"loss": loss.detach()}

    def pretrain_steps(self):
        return [Step("P", self.pixel, "G")]

    def critic_steps(self):
        return [Step("D", self.critic, "D", frozen=("generator",))]

    def adversarial_steps(self):
        return [Step("D", self.critic, "D", frozen=("generator",)), Step("G", self.fool, "G", frozen=("discriminator",))]

    @torch.no_grad()
    def colorize(self, L):
        return torch.zeros(L.shape[0], 2, *L.shape[2:], device=L.device)

    def generator_modules(self):
        return [self.generator]


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = torch.from_numpy(rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item  # the EpochSampler yields (index, seed)
        return {"rgb": self.images[index], "path": f"{index}.png"}


class TinyData:
    """What the trainer asks of a data object, over random 16x16 images."""

    def __init__(self, train: int = 4, val: int = 2, batch_size: int = 2) -> None:
        self.train, self.val, self.batch_size = Images(train, 1), Images(val, 2), batch_size
        self.train_size, self.val_size = train, val

    def train_loader(self, rank: int = 0, world_size: int = 1) -> DataLoader:
        sampler = EpochSampler(len(self.train), seed=0, rank=rank, world_size=world_size)
        return DataLoader(self.train, batch_size=self.batch_size, sampler=sampler, drop_last=True)

    def val_loader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)

    def device_batch(self, raw, device):
        L, ab = lab_batch(raw, device)
        return {"L": L, "ab": ab}


class Recorder(Logger):
    """Keeps every metrics row, and the weights of the nets as they were at that row."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe, self.rows, self.weights = recipe, [], []

    def log_metrics(self, metrics, step):
        self.rows.append({"step": step, **metrics})
        self.weights.append({name: parameters_to_vector(net.parameters()).detach().clone()
                             for name, net in (("G0", self.recipe.generator[0]), ("G1", self.recipe.generator[1]),
                                               ("D", self.recipe.discriminator))})

    def train_rows(self) -> list[dict]:
        return [row for row in self.rows if "train/images_per_sec" in row]

    def val_rows(self) -> list[dict]:
        return [row for row in self.rows if "val/psnr" in row]

    def per_epoch(self, key: str) -> list:
        """The value of `key` in each epoch's train rows; it must be the same all epoch."""
        values: dict[int, set] = {}
        for row in self.train_rows():
            values.setdefault(row["epoch"], set()).add(row[key])
        assert all(len(v) == 1 for v in values.values()), values
        return [values[epoch].pop() for epoch in sorted(values)]


def fit(tmp_path, data=None, resume=None, recipe=None, **options):
    recipe = recipe or TinyRecipe()
    options = {"device": "cpu", "progress_bar": False, "log_every_n_steps": 1, "num_samples": 1, "save_every_n_epochs": 0, **options}
    trainer = Trainer(**options)
    logger = Recorder(recipe)
    trainer.fit(recipe, data or TinyData(), tmp_path / "run", logger, {"trainer": options}, resume=resume)
    return trainer, logger


def test_phases_run_by_epoch_and_each_trains_only_its_nets(tmp_path):
    # 2 steps an epoch: epoch 1 pretrains G, epoch 2 trains the critic, 3-4 alternate.
    trainer, logger = fit(tmp_path, max_epochs=4, pretrain_epochs=1, critic_pretrain_epochs=1, val_every_n_epochs=0)
    rows = logger.train_rows()
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert [row["epoch"] for row in rows] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [PHASES[row["phase"]] for row in rows] == ["pretrain"] * 2 + ["critic"] * 2 + ["adversarial"] * 4
    losses = [sorted(k for k in row if k.startswith("train/") and k not in ("train/images_per_sec", "train/data_wait")) for row in rows]
    assert losses == [["train/P/loss"]] * 2 + [["train/D/loss"]] * 2 + [["train/D/loss", "train/G/loss"]] * 4

    w = logger.weights  # after steps 1..8
    changed = lambda net, a, b: not torch.equal(w[a][net], w[b][net])  # noqa: E731
    assert changed("G1", 0, 1) and not changed("D", 0, 1)  # pretraining moves G alone
    assert changed("D", 1, 3) and not changed("G0", 1, 3) and not changed("G1", 1, 3)  # the critic, G frozen
    assert changed("D", 3, 7) and changed("G1", 3, 7)  # adversarial: both
    assert all(p.requires_grad for p in trainer.recipe.parameters())  # nothing left frozen after a step
    assert trainer.epoch == 4 and trainer.global_step == 8


def test_freeze_schedule_holds_a_submodule_for_its_first_epochs(tmp_path):
    trainer, logger = fit(tmp_path, max_epochs=3, pretrain_epochs=3, val_every_n_epochs=0,
                          freeze_epochs={"generator.0": 2})
    w = logger.weights  # 2 steps an epoch: rows 0-1 epoch 1, 2-3 epoch 2, 4-5 epoch 3
    assert torch.equal(w[0]["G0"], w[3]["G0"]), "generator.0 is held for epochs 1 and 2"
    assert not torch.equal(w[0]["G1"], w[3]["G1"]), "the rest of G trains meanwhile"
    assert not torch.equal(w[3]["G0"], w[5]["G0"]), "generator.0 trains from epoch 3"
    assert all(p.requires_grad for p in trainer.recipe.generator[0].parameters())


def test_freeze_schedule_names_a_missing_submodule_before_training(tmp_path):
    with pytest.raises(ConfigError, match="tiny has no submodule 'generator.encoder'"):
        fit(tmp_path, max_epochs=1, freeze_epochs={"generator.encoder": 1})


LR_FACTORS = {
    # constant, then to 0 over the last 3 of 6 epochs (the last one is not 0: the
    # reference decays over n_epochs_decay + 1 steps)
    "linear": ({"lr_decay_epochs": 3}, [1, 1, 1, 0.75, 0.5, 0.25]),
    "step": ({"lr_decay_iters": 2, "lr_step_gamma": 0.5}, [1, 1, 0.5, 0.5, 0.25, 0.25]),
    "cosine": ({}, [(1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
}


@pytest.mark.parametrize("policy", list(LR_FACTORS))
def test_lr_policy_sets_each_epochs_learning_rate(tmp_path, policy):
    options, factors = LR_FACTORS[policy]
    _, logger = fit(tmp_path, max_epochs=6, lr_policy=policy, val_every_n_epochs=0, **options)
    assert logger.per_epoch("lr/G") == pytest.approx([G_LR * f for f in factors])
    assert logger.per_epoch("lr/D") == pytest.approx([D_LR * f for f in factors])


def test_linear_policy_without_decay_epochs_keeps_the_learning_rate(tmp_path):
    _, logger = fit(tmp_path, max_epochs=3, val_every_n_epochs=0)
    assert logger.per_epoch("lr/G") == pytest.approx([G_LR] * 3)


# The monitored value never changes (colorize ignores the nets): the first validation
# sets the best, the next 6 are worse than it by less than 1 %, and after the 6th
# (more than patience=5 bad ones) the rate drops by 0.2, for epoch 8.
PLATEAU = [1] * 7 + [0.2] * 2


def test_plateau_policy_cuts_the_rate_when_the_monitored_metric_stalls(tmp_path):
    _, logger = fit(tmp_path, max_epochs=9, lr_policy="plateau")
    assert len(logger.val_rows()) == 9
    assert logger.per_epoch("lr/G") == pytest.approx([G_LR * f for f in PLATEAU])
    assert logger.per_epoch("lr/D") == pytest.approx([D_LR * f for f in PLATEAU])


def test_plateau_policy_counts_validations_not_epochs(tmp_path):
    # A validation every 2nd epoch: the 7th is at epoch 14, so epoch 15 runs at 0.2.
    _, logger = fit(tmp_path, max_epochs=15, lr_policy="plateau", val_every_n_epochs=2)
    assert logger.per_epoch("lr/G") == pytest.approx([G_LR] * 14 + [G_LR * 0.2])


@pytest.mark.parametrize(
    "policy, options, factors",
    [("plateau", {}, PLATEAU), ("step", {"lr_decay_iters": 2, "lr_step_gamma": 0.5}, [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 1 / 16])],
)
def test_a_resumed_run_continues_the_lr_schedule(tmp_path, policy, options, factors):
    fit(tmp_path / "first", max_epochs=5, lr_policy=policy, **options)
    ckpt = load_checkpoint(tmp_path / "first" / "run" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 5 and set(ckpt["schedulers"]) == {"G", "D"}
    _, logger = fit(tmp_path / "second", resume=ckpt, max_epochs=9, lr_policy=policy, **options)
    assert logger.per_epoch("lr/G") == pytest.approx([G_LR * f for f in factors[5:]])


def test_raising_max_epochs_on_resume_moves_the_linear_decay_to_the_new_end(tmp_path):
    # 4 epochs, decay over the last 2: [1, 1, 2/3, 1/3], and 0 for the epoch after the end.
    _, first = fit(tmp_path / "first", max_epochs=4, lr_decay_epochs=2, val_every_n_epochs=0)
    assert first.per_epoch("lr/G") == pytest.approx([G_LR * f for f in (1, 1, 2 / 3, 1 / 3)])
    ckpt = load_checkpoint(tmp_path / "first" / "run" / "checkpoints" / "last.pt")
    # Extended to 6: epochs 5 and 6 are the new last two, not epochs at the rate of 0.
    _, resumed = fit(tmp_path / "second", resume=ckpt, max_epochs=6, lr_decay_epochs=2, val_every_n_epochs=0)
    assert resumed.per_epoch("lr/G") == pytest.approx([G_LR * 2 / 3, G_LR / 3])


def test_lr_policy_options_are_checked(tmp_path):
    cases = [
        ({"lr_policy": "exponential"}, "trainer.lr_policy must be one of linear, step, plateau, cosine, got 'exponential'"),
        ({"lr_policy": "step", "lr_decay_iters": 0}, "trainer.lr_decay_iters must be >= 1, got 0"),
        ({"lr_policy": "step", "lr_step_gamma": 0}, "trainer.lr_step_gamma must be a number > 0, got 0"),
        ({"lr_step_gamma": "half"}, "trainer.lr_step_gamma must be a number > 0, got 'half'"),
        ({"lr_policy": "plateau", "val_every_n_epochs": 0}, "trainer.lr_policy=plateau follows trainer.monitor"),
        ({"max_epochs": 2, "lr_decay_epochs": 3}, r"trainer.lr_decay_epochs \(3\) exceeds trainer.max_epochs \(2\)"),
        # Said when the trainer is built, not after a first epoch and validation.
        ({"monitor": "val/foo"}, r"trainer.monitor=val/foo is not a validation metric; choose one of "
                                 r"val/colorfulness, .*val/mae, .*val/psnr, val/ssim$"),
        ({"freeze_epochs": "abc"}, r"trainer.freeze_epochs must map parts to epochs, e.g. '\{encoder: 2\}', got 'abc'"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            Trainer(device="cpu", **options)
        assert "\n" not in str(error.value)
    # null: the second half of whatever max_epochs is (the reference's n_epochs_decay =
    # n_epochs; CycleGAN's and StarGAN's default), so a short run needs no lr_decay_epochs.
    for epochs, half in ((1, 0), (4, 2), (5, 2), (40, 20)):
        assert Trainer(device="cpu", max_epochs=epochs, lr_decay_epochs=None).lr_policy.decay_epochs == half
    half = Trainer(device="cpu", max_epochs=6, lr_decay_epochs=None).lr_policy
    assert [half.factor(e) for e in range(6)] == pytest.approx(LR_FACTORS["linear"][1])
    with pytest.raises(ConfigError, match="trainer.lr_decay_epochs must be an integer or null, got 'half'"):
        Trainer(device="cpu", lr_decay_epochs="half")
    # lr_decay_epochs belongs to the linear policy: the others ignore it (recipes set it).
    assert Trainer(device="cpu", max_epochs=2, lr_decay_epochs=3, lr_policy="cosine").lr_policy.name == "cosine"


def test_max_steps_inside_an_epoch_stops_there_without_ending_the_epoch(tmp_path):
    # 2 steps an epoch: step 3 is the first of epoch 2, which must not end there.
    trainer, logger = fit(tmp_path, max_epochs=10, max_steps=3, lr_policy="step", lr_decay_iters=1, lr_step_gamma=0.5)
    assert [row["step"] for row in logger.train_rows()] == [1, 2, 3]
    assert trainer.global_step == 3 and trainer.epoch == 1 and trainer.batch_in_epoch == 1
    assert [(row["step"], row["epoch"]) for row in logger.val_rows()] == [(2, 1), (3, 2)]  # validated where it stopped
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 3 and ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 1
    assert ckpt["schedulers"]["G"]["last_epoch"] == 1, "the stop stepped no LR schedule"
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["epoch_0001.png", "epoch_0002_step_00000003.png"]


@pytest.mark.parametrize("cut", [3, 4, 7], ids=["mid-epoch", "epoch-end-not-due-for-validation", "mid-epoch-later"])
def test_stopped_by_max_steps_then_resumed_equals_the_straight_run(tmp_path, cut):
    # Validated every 2nd epoch, under the plateau policy: the validation at the stop must
    # not reach the policy (a longer run makes no validation there).
    options = {"max_epochs": 5, "lr_policy": "plateau", "val_every_n_epochs": 2}
    straight, straight_log = fit(tmp_path / "straight", **options)
    fit(tmp_path / "cut", max_steps=cut, **options)
    ckpt = load_checkpoint(tmp_path / "cut" / "run" / "checkpoints" / "last.pt")
    resumed, resumed_log = fit(tmp_path / "cut", resume=ckpt, **options)
    assert strip_speed(resumed_log.train_rows()) == strip_speed(straight_log.train_rows())[cut:]
    for key, value in straight.recipe.state_dict().items():
        assert torch.equal(resumed.recipe.state_dict()[key], value), key
    assert [s.state_dict() for s in resumed.schedulers.values()] == [s.state_dict() for s in straight.schedulers.values()]
    assert (resumed.epoch, resumed.global_step, resumed.batch_in_epoch) == (5, 10, 0)


def test_without_validation_images_a_run_trains_unvalidated_and_says_so_once(tmp_path, caplog):
    # A folder of one photo, or data.val_fraction=0, leaves nothing to validate on.
    with caplog.at_level(logging.WARNING, logger="gancolor.trainer"):
        trainer, logger = fit(tmp_path, data=TinyData(val=0), max_epochs=2, save_every_n_epochs=1)
    assert trainer.epoch == 2 and logger.val_rows() == []
    said = [r.getMessage() for r in caplog.records if "no validation images" in r.getMessage()]
    assert len(said) == 1 and "an empty val/ folder beside train/" in said[0]  # the layout's own cause too
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "checkpoints" / "best.pt").exists()
    assert not list((run / "samples").iterdir())
    with pytest.raises(ConfigError, match="trainer.lr_policy=plateau follows trainer.monitor, but there are no validation images"):
        fit(tmp_path / "plateau", data=TinyData(val=0), lr_policy="plateau")


@contextlib.contextmanager
def files_limited_to(size: int):
    """Writes past `size` bytes of any file fail, as the kernel makes them fail (EFBIG)."""
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def test_a_checkpoint_the_disk_refuses_stops_the_run_in_one_line_and_keeps_the_previous_one(tmp_path):
    fit(tmp_path, max_epochs=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with files_limited_to(len(before) // 2), pytest.raises(CheckpointWriteError) as refused:
        fit(tmp_path, resume=load_checkpoint(last), max_epochs=2)
    message = str(refused.value)
    assert "cannot write a checkpoint into" in message and "File too large" in message and "\n" not in message
    assert f"the previous checkpoint {last} is intact" in message and refused.value.exit_code == 1
    assert last.read_bytes() == before and load_checkpoint(last)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"], "no temporary file left"


def test_logs_and_sample_grids_the_disk_refuses_warn_once_and_the_run_goes_on(tmp_path, caplog):
    run = tmp_path / "run"
    for epoch in (1, 2):  # a grid cannot be written where a folder has its name
        (run / "samples" / f"epoch_{epoch:04d}.png").mkdir(parents=True)
    trainer = Trainer(device="cpu", progress_bar=False, log_every_n_steps=1, num_samples=1, max_epochs=2)
    with caplog.at_level(logging.WARNING, logger="gancolor.trainer"):
        # /dev/full: every write to metrics.jsonl fails with ENOSPC
        trainer.fit(TinyRecipe(), TinyData(), run, JsonlLogger("/dev/full"), {})
        trainer.logger.finish()
    assert trainer.epoch == 2 and load_checkpoint(run / "checkpoints" / "last.pt")["global_step"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "cannot write metrics" in w and "No space left on device" in w]) == 1, warnings
    assert len([w for w in warnings if "cannot write the sample grid" in w]) == 2, warnings


class Diverging(TinyRecipe):
    """A pixel loss of NaN at the given steps (from 1)."""

    def __init__(self, nan_at: set[int]) -> None:
        super().__init__()
        self.nan_at, self.steps = nan_at, 0

    def pixel(self, batch, state):
        self.steps += 1
        loss, values = super().pixel(batch, state)
        if self.steps in self.nan_at:
            loss = loss * float("nan")
        return loss, {"loss": loss.detach()}


# 8 images, batch 2: 4 steps an epoch; G alone, so every step is one P step.
DIVERGES = {"data": TinyData(train=8), "max_epochs": 3, "pretrain_epochs": 3, "val_every_n_epochs": 0, "save_every_n_epochs": 1}


def test_a_loss_that_turns_nan_stops_the_run_at_the_next_log_step_and_keeps_the_last_good_checkpoint(tmp_path):
    options = {k: v for k, v in DIVERGES.items() if k != "data"}
    trainer = Trainer(device="cpu", progress_bar=False, log_every_n_steps=4, **options)
    with pytest.raises(TrainingDiverged) as stopped:
        trainer.fit(Diverging({6}), DIVERGES["data"], tmp_path / "run", Logger(), {})
    assert trainer.global_step == 8, "noticed on the device at step 6, read back at the next log step"
    message = str(stopped.value)
    assert message.startswith("training diverged: the P/loss loss was nan at step 6") and stopped.value.exit_code == 1
    assert "last.pt (saved before it) is kept" in message and "trainer.on_nonfinite=skip_step" in message
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 4, "the epoch-1 checkpoint, not one of the NaN weights"
    assert all(torch.isfinite(v).all() for v in ckpt["nets"].values())


def test_skip_step_drops_non_finite_updates_counts_them_and_stops_after_too_many_in_a_row(tmp_path):
    trainer, logger = fit(tmp_path / "a", recipe=Diverging({3, 4, 9}), on_nonfinite="skip_step", **DIVERGES)
    assert trainer.global_step == 12 and all(torch.isfinite(p).all() for p in trainer.recipe.parameters())
    assert [row["train/P/skipped"] for row in logger.train_rows()] == [0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    weights = [row["G1"] for row in logger.weights]
    assert torch.equal(weights[1], weights[3]), "the updates of steps 3 and 4 were dropped"
    assert all(math.isfinite(row.get("train/P/loss", 0.0)) for row in logger.train_rows())

    with pytest.raises(TrainingDiverged, match=r"the P/loss loss was nan in 3 steps in a row, the last at step 7"):
        fit(tmp_path / "b", recipe=Diverging({5, 6, 7}), on_nonfinite="skip_step", max_skipped_steps=3, **DIVERGES)


def test_a_skipped_step_leaves_the_generator_ema_alone(tmp_path):
    recipe = Diverging({3, 4, 9})
    recipe.ema_decay = 0.5
    trainer, logger = fit(tmp_path, recipe=recipe, on_nonfinite="skip_step", **DIVERGES)
    assert trainer.ema.updates() == 12 - 3, "one average update per optimiser step taken, none for the 3 dropped"
    assert all(torch.isfinite(v).all() for v in trainer.ema.state_dict()["generator"].values())


class CtrlCTwice(TinyRecipe):
    """Ctrl-C (a real SIGINT) during step 3, and again while that stop's checkpoint is
    being written (as the recipe's weights are gathered for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps, self.interrupted_save = 0, False

    def pixel(self, batch, state):
        self.steps += 1
        if self.steps == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().pixel(batch, state)

    def state_dict(self, *args, **kwargs):
        if self.steps == 3 and not self.interrupted_save:
            self.interrupted_save = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().state_dict(*args, **kwargs)


def test_a_second_ctrl_c_never_cuts_a_checkpoint_write_short(tmp_path):
    recipe = CtrlCTwice()
    with pytest.raises(KeyboardInterrupt):  # the abort the second Ctrl-C asked for, once the write is done
        fit(tmp_path, recipe=recipe, data=TinyData(train=8), max_epochs=2, pretrain_epochs=2, val_every_n_epochs=0)
    assert recipe.interrupted_save
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (3, 0, 3)
    assert not [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name != "last.pt"], "no temporary file left"


@pytest.mark.parametrize("every, steps", [(1, list(range(1, 13))), (5, [5, 10]), (4, [4, 8, 12]), (20, [])])
def test_one_metrics_row_every_log_every_n_steps(tmp_path, every, steps):
    # 8 images, batch 2: 4 steps an epoch, 12 in all; the count runs across epochs.
    _, logger = fit(tmp_path, data=TinyData(train=8), max_epochs=3, pretrain_epochs=3,
                    log_every_n_steps=every, val_every_n_epochs=2)
    rows = logger.train_rows()
    assert [row["step"] for row in rows] == steps
    assert [row["epoch"] for row in rows] == [(s - 1) // 4 + 1 for s in steps]
    # Validated every 2nd epoch and at the end; its rows are separate.
    assert [(row["step"], row["epoch"]) for row in logger.val_rows()] == [(8, 2), (12, 3)]


def test_a_metrics_row_is_the_mean_of_the_steps_since_the_last_one(tmp_path):
    _, every_step = fit(tmp_path / "a", max_epochs=2, pretrain_epochs=2, val_every_n_epochs=0)
    _, every_2nd = fit(tmp_path / "b", max_epochs=2, pretrain_epochs=2, val_every_n_epochs=0, log_every_n_steps=2)
    losses = [row["train/P/loss"] for row in every_step.train_rows()]
    assert [row["train/P/loss"] for row in every_2nd.train_rows()] == pytest.approx(
        [(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2]
    )


def test_checkpoint_keys_stay_what_resume_and_older_checkpoints_use(tmp_path):
    fit(tmp_path, max_epochs=1, val_every_n_epochs=0)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(ckpt) == {
        "format", "format_version", "gancolor_version", "config", "recipe", "nets", "optimizers", "schedulers",
        "scaler", "global_step", "epoch", "batch_in_epoch", "phase", "best", "log_sums", "log_counts", "rng",
        "logger_run_id",
    }
    assert ckpt["recipe"] == "tiny" and ckpt["phase"] == "adversarial" and set(ckpt["optimizers"]) == {"G", "D"}
    assert all(k.split(".")[0] in ("generator", "discriminator") for k in ckpt["nets"])
