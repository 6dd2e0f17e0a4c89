import os
import pickle

import pytest
import torch

from gancolor.checkpoint import atomic_save, load_checkpoint, load_nets, load_recipe, make_checkpoint
from gancolor.errors import CheckpointError
from gancolor.models.pix2pix import Pix2Pix
from gancolor.nets import PatchDiscriminator, UNetGenerator

CONFIG = {
    "model": {"_target_": "gancolor.models.pix2pix.Pix2Pix", "name": "pix2pix"},
    "generator": {"_target_": "gancolor.nets.UNetGenerator", "ngf": 8, "image_size": 32},
    "discriminator": {"_target_": "gancolor.nets.PatchDiscriminator", "ndf": 8},
    "loss": {"gan_mode": "lsgan", "lambda_L1": 10.0},
}


def make_recipe(ngf: int = 8) -> Pix2Pix:
    return Pix2Pix(UNetGenerator(ngf=ngf, image_size=32), PatchDiscriminator(ndf=8), CONFIG["loss"])


def test_round_trip_rebuilds_the_recipe_from_the_file_alone(tmp_path):
    recipe = make_recipe()
    path = atomic_save(make_checkpoint(CONFIG, recipe="pix2pix", nets=recipe.state_dict()), tmp_path / "a.pt")
    loaded, ckpt = load_recipe(path)
    assert ckpt["gancolor_version"] and ckpt["config"] == CONFIG
    assert loaded.gan_loss.gan_mode == "lsgan" and not loaded.training
    L = torch.rand(1, 1, 40, 24) * 2 - 1
    recipe.eval()
    assert torch.equal(loaded.colorize(L), recipe.colorize(L))
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_mismatched_nets_are_listed(tmp_path):
    other = make_recipe(ngf=16).state_dict()
    with pytest.raises(CheckpointError, match="different shape") as err:
        load_nets(make_recipe(), other, "x.pt")
    assert "generator." in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_nets(make_recipe(), {**make_recipe().state_dict(), "extra.weight": torch.zeros(1)}, "x.pt")


def test_truncated_and_foreign_files_give_one_line(tmp_path):
    good = atomic_save(make_checkpoint(CONFIG, nets=make_recipe().state_dict()), tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a gancolor checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the planted file is a plain pickle
def test_loading_never_runs_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format": "gancolor-checkpoint", "x": Exploit()}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint("evil.pt")
    assert not (tmp_path / "pwned").exists()
    # A stored config may only name gancolor classes for Hydra to build.
    evil_config = {**CONFIG, "generator": {"_target_": "os.system", "command": "touch pwned"}}
    atomic_save(make_checkpoint(evil_config, nets={}), tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="refusing to build 'os.system'"):
        load_recipe(tmp_path / "cfg.pt")
    assert not (tmp_path / "pwned").exists()


def test_init_from_copies_the_weights_and_refuses_another_recipe(tmp_path):
    from gancolor.train import init_weights_from

    source = make_recipe()
    path = atomic_save(make_checkpoint(CONFIG, recipe="pix2pix", nets=source.state_dict(), global_step=7), tmp_path / "a.pt")
    target = make_recipe()
    assert not torch.equal(target.generator.down[0][0].weight, source.generator.down[0][0].weight)
    init_weights_from(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    other = atomic_save(make_checkpoint(CONFIG, recipe="cyclegan", nets={}), tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="is a cyclegan checkpoint; this run trains pix2pix"):
        init_weights_from(make_recipe(), other)
