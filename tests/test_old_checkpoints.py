"""Checkpoints written before the house-order restructuring (tests/data/checkpoints_0.1.0,
see its README) still load, colourise and resume: their stored `_target_`s name the old
data-module classes, their loss configs lack options added since, and their recipes
were saved with the nets' old attribute names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from skimage import data

from gancolor import color
from gancolor.checkpoint import load_checkpoint, load_recipe
from helpers import read_metrics
from warm import run_gancolor

OLD = Path(__file__).parent / "data" / "checkpoints_0.1.0"
RECIPES = ("pix2pix", "cyclegan", "stargan", "cic")


@pytest.mark.parametrize("name", RECIPES)
def test_an_old_checkpoint_rebuilds_its_recipe_and_colourises(name):
    ckpt = load_checkpoint(OLD / f"{name}.pt")
    assert ckpt["recipe"] == name and ckpt["global_step"] == 3
    recipe, _ = load_recipe(OLD / f"{name}.pt")
    rgb = torch.from_numpy(data.chelsea()[:64, :96]).permute(2, 0, 1).unsqueeze(0)
    L, _ = color.batch_to_lab(rgb)
    ab = recipe.colorize(L)
    assert ab.shape == (1, 2, 64, 96) and torch.isfinite(ab).all()
    assert ab.abs().max() <= 1.0 + 1e-6  # normalised ab, as every recipe returns it


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_an_old_run_resumes_and_trains_on(tmp_path, cache, name):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(OLD / f"{name}.pt", run / "checkpoints" / "last.pt")
    result = run_gancolor([f"resume={run}", "trainer.max_steps=5", "trainer.log_every_n_steps=1", "trainer.progress_bar=false"], tmp_path, cache)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = load_checkpoint(run / "checkpoints" / "last.pt")
    assert resumed["global_step"] == 5 and resumed["recipe"] == name
    steps = [row["step"] for row in read_metrics(run) if any(k.startswith("train/") for k in row)]
    assert steps and min(steps) > 3  # logged from where the old run stopped, not from 0
