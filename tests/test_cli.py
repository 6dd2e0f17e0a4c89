"""`python -m gancolor` as a user runs it, in a subprocess."""

import json
import os
import re

import pytest
import torch

from gancolor.checkpoint import load_checkpoint
from helpers import one_error_line, run_gancolor

TINY = [
    "data.image_size=32",
    "data.batch_size=2",
    "generator.ngf=8",
    "discriminator.ndf=8",
    "trainer.max_epochs=2",
    "trainer.pretrain_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=2",
    "trainer.progress_bar=false",
]


@pytest.mark.slow
def test_default_training_leaves_a_complete_run_folder(tmp_path, cache):
    result = run_gancolor(TINY, cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]

    runs = list((tmp_path / "runs" / "pix2pix").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", runs[0].name)
    run = runs[0]
    for name in ("config.yaml", "metrics.jsonl", "train.log", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_0001.png", "epoch_0002.png"]
    assert list((run / "wandb").glob("offline-run-*")), "W&B ran offline inside the run folder"

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/G/loss" in r]
    pretrain_rows = [r for r in rows if "train/G/pixel" in r]
    val_rows = [r for r in rows if "val/psnr" in r]
    assert pretrain_rows and train_rows and len(val_rows) == 2
    assert {"train/D/out_real", "train/D/out_fake", "train/D/loss", "lr/G", "lr/D"} <= set(train_rows[-1])
    assert {"val/ssim", "val/mae", "val/colorfulness_ratio"} <= set(val_rows[-1])
    assert all(r["phase"] == 0 for r in pretrain_rows) and all(r["phase"] == 2 for r in train_rows)

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["recipe"] == "pix2pix" and ckpt["epoch"] == 2 and ckpt["phase"] == "adversarial"
    assert ckpt["global_step"] == rows[-1]["step"]
    assert set(ckpt["optimizers"]) == {"G", "D"} and "scaler" in ckpt and "schedulers" in ckpt
    assert ckpt["config"]["generator"]["ngf"] == 8  # the resolved config travels with the weights
    assert any(k.startswith("generator.") for k in ckpt["nets"])
    assert all(torch.isfinite(v).all() for v in ckpt["nets"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["loss.gan_mode=wgan"], "loss.gan_mode must be one of vanilla, lsgan, hinge"),
        (["trainer.precison=bf16"], "precison"),
        (["model=nonexistent"], "nonexistent"),
        (["data=folder", "data.root=/no/such/folder"], "/no/such/folder"),
    ],
)
def test_user_mistakes_give_one_line_and_no_run_folder(tmp_path, cache, args, expected):
    # One command per kind of refusal; every value check itself is tested in-process
    # (test_newuser.test_config_mistakes_are_named_in_one_line, test_options).
    result = run_gancolor(args, cwd=tmp_path, cache=cache, timeout=120)
    assert result.returncode == 2
    assert expected in one_error_line(result)
    leftovers = list((tmp_path / "runs").rglob("*")) if (tmp_path / "runs").exists() else []
    assert leftovers == []


def test_home_in_a_path_is_expanded_before_hydra_parses_it(tmp_path, cache):
    from gancolor.commandline import expand_home

    home = os.path.expanduser("~")
    assert expand_home("data.root=~/photos") == f"data.root={home}/photos"
    assert expand_home("data.root=~/a,~/b") == f"data.root={home}/a,{home}/b"
    assert expand_home("~logger") == "~logger" and expand_home("data.root=/x~y") == "data.root=/x~y"
    result = run_gancolor(["data=folder", "data.root=~/no-such-folder-gancolor"], cwd=tmp_path, cache=cache, timeout=120)
    assert result.returncode == 2
    assert f"folder not found: {home}/no-such-folder-gancolor" in one_error_line(result)
    assert not (tmp_path / "runs").exists(), "a run that never started leaves no folder"
