"""NIR -> colour (data=nir, model.target=lab): pairs of synthetic NIR images made from
real photos (helpers.synthetic_nir: a fixed channel mix under a gamma) and the photos
themselves. The loader pairs and crops both alike, a file without its partner is named,
a tiny pix2pix trains on NIR in this process and its checkpoint colourises an NIR file
of odd size into an RGB image of that size; a colour photo given to it is one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gancolor.build import build, build_recipe
from gancolor.colorize import main as colorize
from gancolor.data.nir import NIRDataModule, load_nir
from gancolor.errors import ConfigError, DataError
from gancolor.export import main as export
from gancolor.loggers import Logger
from gancolor.models.base import check_input_kind
from helpers import compose, save_checkpoint, shrink, synthetic_nir, write_nir_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, photos):
    return write_nir_pairs(tmp_path_factory.mktemp("nir"), photos)


def module(**options) -> NIRDataModule:
    return NIRDataModule(**{"image_size": 32, "batch_size": 4, "num_workers": 0, "val_fraction": 0.25, **options})


def test_the_loader_pairs_and_crops_nir_and_rgb_alike(pairs):
    data = module(root=pairs)
    data.setup()
    assert (data.train_size, data.val_size) == (3, 1)
    agreement, flipped_agreement = [], []
    for seed in range(3):  # several draws of crops and flips
        data.train_loader().sampler.set_epoch(seed)
        for batch in data.train_loader():
            for rgb, nir in zip(batch["rgb"], batch["nir"]):
                # The NIR of the cropped photo is the cropped NIR (up to resampling).
                expected = torch.from_numpy(synthetic_nir(rgb.permute(1, 2, 0).numpy()) / 255.0).float()
                agreement.append((nir[0] - expected).abs().mean())
                flipped_agreement.append((nir[0] - expected.flip(-1)).abs().mean())
    assert max(agreement) < 0.02
    assert min(flipped_agreement) > 3 * max(agreement)
    batch = data.device_batch(next(iter(data.val_loader())), "cpu")
    assert batch["nir"].shape[1:] == (1, 32, 32) and batch["nir"].min() >= -1 and batch["nir"].max() <= 1
    assert batch["rgb"].shape[1:] == (3, 32, 32)


def test_sixteen_bit_nir_is_scaled_by_its_full_range(tmp_path, photos):
    eight, sixteen = (write_nir_pairs(tmp_path / f"b{bits}", photos[:1], bits=bits) for bits in (8, 16))
    a, b = (load_nir(folder / "scenes" / "scene_0_nir.png") for folder in (eight, sixteen))
    assert Image.open(sixteen / "scenes" / "scene_0_nir.png").mode.startswith("I")
    assert np.abs(a - b).max() <= 0.5 / 255 + 1e-6 and b.max() > 0.5


def test_two_folders_pair_by_name_and_a_missing_partner_is_named(tmp_path, photos, caplog):
    for i, photo in enumerate(photos):
        rgb = np.asarray(Image.fromarray(photo).resize((40, 36)))
        (tmp_path / "nir" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "rgb" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "rgb" / "sub" / f"{i:04d}.jpg")
        Image.fromarray(synthetic_nir(rgb, 16)).save(tmp_path / "nir" / "sub" / f"{i:04d}.png")
    Image.fromarray(synthetic_nir(rgb)).save(tmp_path / "nir" / "sub" / "lonely.png")
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        data = module(nir_root=tmp_path / "nir", rgb_root=tmp_path / "rgb")
        data.setup()
    assert data.train_size + data.val_size == len(photos)
    warnings = [r.getMessage() for r in caplog.records if "without a partner" in r.getMessage()]
    assert len(warnings) == 1 and "lonely.png (no RGB partner)" in warnings[0]

    # Nothing pairs up: one error naming a file, not a guessed layout.
    for path in (tmp_path / "rgb" / "sub").iterdir():
        path.rename(path.with_name("other_" + path.name))
    with pytest.raises(DataError, match=r"no NIR/RGB pairs .* e\.g\. nir_root/sub/"):
        module(nir_root=tmp_path / "nir", rgb_root=tmp_path / "rgb").setup()


def test_side_by_side_names_the_file_without_partner(tmp_path, photos, caplog):
    folder = write_nir_pairs(tmp_path, photos)
    (folder / "scenes" / "scene_1_rgb.png").unlink()
    with caplog.at_level(logging.WARNING, logger="gancolor.data"):
        data = module(root=folder)
        data.setup()
    assert data.train_size + data.val_size == len(photos) - 1
    assert sum("scenes/scene_1_nir.png (no RGB partner)" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError, match="data.root=DIR"):
        module().setup()


class Rows(Logger):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics, step=step))


def test_pix2pix_trains_on_nir_and_colourises_an_odd_sized_nir_file(pairs, tmp_path, photos, capsys):
    cfg = shrink(compose("experiment=nir_pix2pix", f"data.root={pairs}", "logger=none", "trainer.log_every_n_steps=1",
                         "trainer.num_samples=2", "trainer.pretrain_epochs=1", "trainer.max_epochs=2", "data.repeats=2"))
    trainer, data, recipe = build(cfg.trainer, "trainer"), build(cfg.data, "data"), build_recipe(cfg)
    data.setup()
    check_input_kind(recipe, data)
    torch.manual_seed(0)
    logger = Rows()
    trainer.fit(recipe, data, tmp_path / "run", logger, OmegaConf.to_container(cfg, resolve=True))
    logged = {key for row in logger.rows for key in row}
    assert {"train/G/pixel", "train/D/loss", "train/G/L1", "val/psnr", "val/ssim", "val/colorfulness_ratio"} <= logged
    assert any(key.startswith("val/hist") for key in logged)
    assert (tmp_path / "run" / "samples" / "epoch_0002.png").is_file()

    # A gray recipe refuses NIR data, and the NIR recipe gray data, before any work.
    with pytest.raises(ConfigError, match="data=nir"):
        check_input_kind(build_recipe(shrink(compose("model=pix2pix"))), data)
    with pytest.raises(ConfigError, match="model.target=lab"):
        check_input_kind(recipe, build(shrink(compose("data=folder", "data.root=x")).data, "data"))

    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    odd = np.asarray(Image.fromarray(photos[1]).resize((45, 37)))
    Image.fromarray(synthetic_nir(odd, 16)).save(tmp_path / "odd_nir.png")
    assert colorize([f"ckpt={ckpt}", f"input={tmp_path / 'odd_nir.png'}", f"output={tmp_path / 'out'}", "progress_bar=false"]) == 0
    result = Image.open(tmp_path / "out" / "odd_nir.png")
    assert (result.mode, result.size) == ("RGB", (45, 37))
    assert np.asarray(result).std(axis=(0, 1)).max() > 0  # a picture, not one flat colour

    # A colour photo given to the NIR model: one line, and the output already written kept.
    Image.fromarray(odd).save(tmp_path / "photo.png")
    capsys.readouterr()
    assert colorize([f"ckpt={ckpt}", f"input={tmp_path / 'photo.png'}", f"output={tmp_path / 'out'}", "progress_bar=false"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gancolor: skipped") and "single-channel NIR" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["odd_nir.png"]

    # export does not know NIR graphs yet: one line, nothing written.
    with pytest.raises(SystemExit) as stopped:
        export([f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'nir.ts'}"])
    assert stopped.value.code == 2 and not (tmp_path / "nir.ts").exists()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gancolor: error: export does not handle NIR checkpoints")
