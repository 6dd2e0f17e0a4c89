"""Exact resume as a property of every recipe (conf/model/*.yaml, found by globbing) and
every kind of cut point: k steps, then `resume=` to N, must equal a straight run of N
steps bit for bit (every net with its extra state, such as CycleGAN's image pools; the
generators' EMA; the optimisers, LR schedules, scaler, counters and RNGs) and row for row (every logged loss).

The cut points: mid-epoch (trainer.max_steps, then raised on resume), exactly on an
epoch boundary (trainer.max_epochs, then raised), on the pretrain -> adversarial switch,
inside critic pretraining, inside a StarGAN n_critic cycle, just after a
save_every_n_steps save (the run went on and died; resumed from that step file) and
after SIGTERM.

Runs go through gancolor.train.train, the Hydra task itself, in this process: a CLI run
costs seconds of imports (test_resume.py proves the commands through the CLI).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from gancolor.build import build, build_recipe
from gancolor.checkpoint import load_checkpoint
from gancolor.train import train
from gancolor.trainer import Trainer
from helpers import CONF_DIR, compose, phase_steps, read_metrics, shrink, strip_speed

RECIPES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
CUTS = ("mid-epoch", "epoch-boundary", "pretrain-switch", "critic", "n-critic", "after-save", "sigterm")
# The learning rate halves every epoch: a schedule that the cuts cross, and one that
# does not depend on max_epochs (so that raising it continues exactly).
SETTINGS = [
    "logger=none",
    "trainer.log_every_n_steps=2",  # odd cuts leave loss sums not yet logged in the checkpoint
    "trainer.num_samples=1",
    "trainer.lr_policy=step",
    "trainer.lr_decay_iters=1",
    "trainer.lr_step_gamma=0.5",
    "model.ema_decay=0.9",  # the generators' average too must continue exactly (and it is validated)
]
ADVERSARIAL_EPOCHS = 2
# Checkpoint entries that describe the command, not where training stands.
NOT_STATE = ("config", "best", "logger_run_id")


pytestmark = pytest.mark.usefixtures("one_thread")


def train_in_process(base: DictConfig, run_dir: Path, overrides: list[str]):
    """What `python -m gancolor OVERRIDES hydra.run.dir=RUN_DIR` runs, with `base` (a
    config composed with its hydra node) in place of the composition."""
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.overrides.task = list(overrides)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(cfg)


@dataclass
class Straight:
    """A recipe's uninterrupted run, and what its schedule offers to cut."""

    base: DictConfig
    run: Path
    steps_per_epoch: int
    pretrain_epochs: int
    critic_epochs: int
    every: int  # the longest cycle of a step (StarGAN's n_critic)

    @property
    def epochs(self) -> int:
        return self.pretrain_epochs + self.critic_epochs + ADVERSARIAL_EPOCHS

    @property
    def adversarial_start(self) -> int:
        return (self.pretrain_epochs + self.critic_epochs) * self.steps_per_epoch


def composed(name: str, folder: Path) -> DictConfig:
    """conf/model/NAME.yaml training tiny nets on `folder`, as composed for the command line."""
    cfg = compose(f"model={name}")
    data = [] if "root" in cfg.data.keys() else ["data=folder"]
    cfg = shrink(compose(f"model={name}", *data, f"data.root={folder}", *SETTINGS, return_hydra_config=True))
    cfg.data.image_size = 16
    return cfg


def cuts_offered(name: str) -> list[str]:
    """The cut points this recipe's schedule has: every recipe can be cut mid-epoch, on an
    epoch boundary, after a periodic save and by SIGTERM; the rest need the phase or
    the step cycle they cut."""
    recipe = build_recipe(composed(name, Path("not-read")))
    has = {
        "pretrain-switch": phase_steps(recipe, "pretrain") is not None,
        "critic": phase_steps(recipe, "critic") is not None,
        "n-critic": max(step.every for step in phase_steps(recipe, "adversarial")) > 1,
    }
    return [cut for cut in CUTS if has.get(cut, True)]


CASES = [(name, cut) for name in RECIPES for cut in cuts_offered(name)]


@pytest.fixture(scope="module")
def straight_run(small_photo_folder, tmp_path_factory):
    """Each recipe's straight run, trained once for all its cuts. (A module fixture
    parametrized indirectly beside `cut` would be built again for every case: pytest keys
    a parametrized fixture by its position in the case list, not by its value.)"""
    runs: dict[str, Straight] = {}

    def get(name: str) -> Straight:
        if name not in runs:
            runs[name] = train_straight(name, small_photo_folder, tmp_path_factory)
        return runs[name]

    return get


def train_straight(name: str, small_photo_folder: Path, tmp_path_factory) -> Straight:
    base = composed(name, small_photo_folder)
    if "n_critic" in base.model:
        base.model.n_critic = 3  # cycles that end inside the run, and one that a cut splits
    recipe = build_recipe(base)
    batches = len(build(base.data, "data").train_loader())
    if batches < 3:  # too few to cut an epoch in its middle
        base.data.repeats = -(-3 // batches)
    pretrain = int(phase_steps(recipe, "pretrain") is not None)
    critic = int(phase_steps(recipe, "critic") is not None)
    every = max(step.every for step in phase_steps(recipe, "adversarial"))
    epochs = pretrain + critic + ADVERSARIAL_EPOCHS
    base.trainer.pretrain_epochs, base.trainer.critic_pretrain_epochs, base.trainer.max_epochs = pretrain, critic, epochs
    run = tmp_path_factory.mktemp(f"straight-{name}")
    train_in_process(base, run, [])
    total = load_checkpoint(run / "checkpoints" / "last.pt")["global_step"]
    assert total % epochs == 0 and total // epochs >= 3, f"{name}: {total} steps in {epochs} epochs"
    return Straight(base, run, total // epochs, pretrain, critic, every)


@dataclass
class Cut:
    step: int  # where the first command stops (or the checkpoint resumed from was saved)
    first: list[str]  # the first command's overrides
    source: Path  # what resume= names
    again: list[str]  # the resume's overrides
    sigterm: bool = False  # stopped by a SIGTERM during `step`, not by a limit


def plan(s: Straight, cut: str, run: Path) -> Cut | None:
    """How to cut this recipe's straight run at `cut`; None when its schedule has no such point."""
    spe, adversarial = s.steps_per_epoch, s.adversarial_start
    resume, unlimited = f"resume={run}", "trainer.max_steps=null"
    by_max_steps = {
        "mid-epoch": adversarial + spe + 1,
        "pretrain-switch": spe if s.pretrain_epochs else None,
        "critic": s.pretrain_epochs * spe + 1 if s.critic_epochs else None,
        "n-critic": adversarial + s.every + 1 if s.every > 1 else None,  # one G step done, the next cycle begun
    }
    if cut in by_max_steps:
        k = by_max_steps[cut]
        return None if k is None else Cut(k, [f"trainer.max_steps={k}"], run, [resume, unlimited])
    if cut == "epoch-boundary":
        k = (s.epochs - 1) * spe
        return Cut(k, [f"trainer.max_epochs={s.epochs - 1}"], run, [resume, f"trainer.max_epochs={s.epochs}"])
    if cut == "after-save":  # saved at k, went on for 2 more steps, died
        k = adversarial + 1
        step_file = run / "checkpoints" / f"step_{k:08d}.pt"
        first = [f"trainer.save_every_n_steps={k}", "trainer.keep_last=100", f"trainer.max_steps={k + 2}"]
        return Cut(k, first, step_file, [f"resume={step_file}", unlimited])
    if cut == "sigterm":
        return Cut(adversarial + 2, [], run, [resume], sigterm=True)
    raise AssertionError(cut)


def sigterm_at(monkeypatch, step: int) -> None:
    """A real SIGTERM to this process while step `step` trains."""
    iteration = Trainer.train_iteration

    def train_iteration(trainer, steps, batch, index):
        if trainer.global_step + 1 == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return iteration(trainer, steps, batch, index)

    monkeypatch.setattr(Trainer, "train_iteration", train_iteration)


def assert_identical(a, b, where: str = "checkpoint") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        equal = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        assert equal, f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def training_rows(run: Path) -> list[dict]:
    return [r for r in strip_speed(read_metrics(run)) if any(k.startswith("train/") for k in r)]


def validation_rows(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if "val/psnr" in r]


@pytest.mark.parametrize("name, cut", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_k_steps_then_resume_equals_the_straight_run(name, cut, straight_run, tmp_path, monkeypatch):
    straight = straight_run(name)
    run = tmp_path / "run"
    c = plan(straight, cut, run)
    assert c is not None, f"cuts_offered and plan disagree about {cut}"
    if c.sigterm:
        sigterm_at(monkeypatch, c.step)
        with pytest.raises(SystemExit) as stopped:
            train_in_process(straight.base, run, c.first)
        assert stopped.value.code == 0
        monkeypatch.undo()
    else:
        train_in_process(straight.base, run, c.first)
    saved = load_checkpoint(c.source if c.source.is_file() else run / "checkpoints" / "last.pt")
    assert (saved["global_step"], saved["batch_in_epoch"]) == (c.step, c.step % straight.steps_per_epoch)

    train_in_process(straight.base, run, c.again)

    assert training_rows(run) == training_rows(straight.run)
    expected, got = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (straight.run, run))
    assert "ema" in expected and "ema" in got
    assert_identical({k: v for k, v in expected.items() if k not in NOT_STATE}, {k: v for k, v in got.items() if k not in NOT_STATE})
    # A run stopped by a limit validated where it stopped, too; every other validation is the same.
    extra = [r for r in validation_rows(run) if r not in validation_rows(straight.run)]
    assert [r["step"] for r in extra] in ([], [c.step])
    assert [r for r in validation_rows(run) if r not in extra] == validation_rows(straight.run)
