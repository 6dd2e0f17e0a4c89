"""Generator EMA (model.ema_decay): the average the trainer keeps of every recipe's
generators, in checkpoints, in validation, and in colorize / evaluate (use_ema).

Exact resume with the average is proved for every recipe and cut point by
tests/test_resume_exact.py, whose runs keep one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gancolor.build import build, build_recipe
from gancolor.checkpoint import load_checkpoint, load_recipe
from gancolor.errors import ConfigError
from gancolor.loggers import Logger
from helpers import CONF_DIR, compose, save_photo, shrink, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class Rows(Logger):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_metrics(self, metrics, step):
        self.rows.append(dict(metrics, step=step))


def fit(folder: Path, run: Path, *overrides: str) -> list[dict]:
    """A tiny pix2pix trained in this process on `folder`; the rows it logged."""
    cfg = shrink(compose("model=pix2pix", f"data.root={folder}", "data=folder", "logger=none", "trainer.log_every_n_steps=1",
                         "trainer.num_samples=0", "trainer.pretrain_epochs=1", "trainer.max_epochs=2", *overrides))
    trainer, data = build(cfg.trainer, "trainer"), build(cfg.data, "data")
    data.setup()
    torch.manual_seed(0)
    logger = Rows()
    trainer.fit(build_recipe(cfg), data, run, logger, OmegaConf.to_container(cfg, resolve=True))
    return logger.rows


def generator_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("generator."): v for k, v in ckpt["nets"].items() if k.startswith("generator.")}


def test_the_average_follows_the_generator_by_the_decay(small_photo_folder, tmp_path):
    """After the first G step the average is G (it tracks G from the start, in generator
    pretraining too); after the second, decay * G_1 + (1 - decay) * G_2, with the
    buffers (BatchNorm's running statistics) copied from G_2."""
    plain = ("model.ema_decay=0.75", "model.ema_warmup=false", "trainer.val_every_n_epochs=0")
    fit(small_photo_folder, tmp_path / "one", *plain, "trainer.max_steps=1")
    fit(small_photo_folder, tmp_path / "two", *plain, "trainer.max_steps=2")
    one, two = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("one", "two"))
    assert one["phase"] == two["phase"] == "pretrain"
    assert (one["ema_updates"], two["ema_updates"]) == (1, 2)
    G1, G2, ema1, ema2 = generator_weights(one), generator_weights(two), one["ema"]["generator"], two["ema"]["generator"]
    assert set(one["ema"]) == {"generator"} and ema2.keys() == G2.keys()
    assert all(torch.equal(ema1[k], G1[k]) for k in G1)
    params = {k for k in G2 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    buffers = set(G2) - params
    assert buffers and params
    assert any(not torch.equal(G1[k], G2[k]) for k in params)  # the second step moved G
    for k in params:
        torch.testing.assert_close(ema2[k], 0.75 * G1[k] + 0.25 * G2[k], rtol=0, atol=1e-6)
    for k in buffers:
        assert torch.equal(ema2[k], G2[k])


def test_validation_uses_the_average_and_training_never_sees_it(small_photo_folder, tmp_path):
    common = ("model.ema_decay=0.9", "trainer.max_steps=6", "trainer.val_every_n_epochs=1")
    ema = fit(small_photo_folder, tmp_path / "ema", *common)
    raw = fit(small_photo_folder, tmp_path / "raw", *common, "trainer.val_use_ema=false")
    plain = fit(small_photo_folder, tmp_path / "plain", "trainer.max_steps=6", "trainer.val_every_n_epochs=1")

    def train(rows):
        return [{k: v for k, v in r.items() if k.startswith("train/") and k not in ("train/images_per_sec", "train/data_wait")} for r in rows
                if "train/G/pixel" in r or "train/G/loss" in r]

    def val(rows):
        return [r["val/psnr"] for r in rows if "val/psnr" in r]

    assert train(ema) == train(raw) == train(plain)  # the average never feeds back into training
    assert val(raw) == val(plain)  # val_use_ema=false validates the raw weights
    assert len(val(ema)) == len(val(raw)) >= 2 and val(ema) != val(raw)
    # best.pt is then chosen by the average's metrics, and holds the average.
    assert "ema" in load_checkpoint(tmp_path / "ema" / "checkpoints" / "best.pt")


@pytest.fixture(scope="module")
def ema_run(small_photo_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ema-run")
    fit(small_photo_folder, run, "model.ema_decay=0.5", "trainer.max_steps=4", "trainer.val_every_n_epochs=0")
    return run / "checkpoints" / "last.pt"


def test_warmup_shortens_the_horizon_of_the_first_updates():
    """model.ema_warmup: the update after t of them uses min(decay, (1 + t) / (10 + t)),
    so after a few hundred steps the average no longer holds the starting weights."""
    from gancolor.ema import GeneratorEMA

    net = torch.nn.Linear(1, 1, bias=False)
    ema = GeneratorEMA({"generator": net}, 0.999, warmup=True)
    assert [round(ema.decay_at(t), 4) for t in (0, 1, 10, 100, 20000)] == [0.1, 0.1818, 0.55, 0.9182, 0.999]
    assert GeneratorEMA({"generator": net}, 0.999).decay_at(1) == 0.999
    history = []
    for step in range(400):
        with torch.no_grad():
            net.weight.fill_(0.0 if step == 0 else 1.0)  # one step from 0, then 1 for good
        ema.update({"generator": net})
        history.append(float(ema.nets()["generator"].weight))
    assert history[0] == 0.0 and history[1] == pytest.approx(1 - 2 / 11)  # the first update copies
    assert history[-1] > 0.98, "without warm-up 0.999^399 = 67% of the first weights would remain"
    assert ema.updates() == 400


def test_colorize_and_evaluate_load_the_average_unless_use_ema_is_false(ema_run, photos, tmp_path):
    ckpt = load_checkpoint(ema_run)
    averaged, _ = load_recipe(ema_run)
    raw, _ = load_recipe(ema_run, use_ema=False)
    assert averaged.uses_ema and not raw.uses_ema
    for name, value in averaged.generator.state_dict().items():
        assert torch.equal(value, ckpt["ema"]["generator"][name])
        assert torch.equal(raw.generator.state_dict()[name], ckpt["nets"][f"generator.{name}"])
    # A checkpoint of a run without the average: its raw weights, whatever use_ema says.
    old, _ = load_recipe(tiny_checkpoint(tmp_path / "no-ema.pt"))
    assert not old.uses_ema

    from gancolor.colorize import main as colorize

    photo = save_photo(photos[2], tmp_path / "in" / "coffee.png")
    outputs = {}
    for flag in ([], ["use_ema=false"]):
        out = tmp_path / ("out-" + "-".join(flag or ["ema"]))
        assert colorize([f"ckpt={ema_run}", f"input={photo}", f"output={out}", "progress_bar=false", *flag]) == 0
        outputs[bool(flag)] = np.asarray(Image.open(out / "coffee.png"))
    assert not np.array_equal(outputs[False], outputs[True])

    from gancolor.commandline import compose_command
    from gancolor.evaluate import Options

    def options(*extra):
        return Options.from_config(compose_command("evaluate", [f"ckpt={ema_run}", "data.root=x", *extra],
                                                   path_keys=frozenset({"ckpt"}), usage=""))

    assert options().use_ema and not options("use_ema=false").use_ema


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_recipe_names_the_generators_to_average(model):
    recipe = build_recipe(shrink(compose(f"model={model}", "model.ema_decay=0.999")))
    names = recipe.generator_names()
    assert recipe.ema_decay == 0.999
    assert names == {"cyclegan": ("G_AB", "G_BA"), "stargan": ("G",)}.get(model, ("generator",))
    assert all(any(True for _ in getattr(recipe, n).parameters()) for n in names)


@pytest.mark.parametrize("value, decay", [(None, None), (0, None), (0.999, 0.999)])
def test_ema_decay_values(value, decay):
    cfg = compose("model=pix2pix", "logger=none")
    cfg.model.ema_decay = value
    assert build_recipe(shrink(cfg)).ema_decay == decay


@pytest.mark.parametrize("value", [1, 1.5, -0.1, "fast", True])
def test_a_bad_ema_decay_is_one_line(value):
    cfg = compose("model=pix2pix", "logger=none")
    cfg.model.ema_decay = value
    with pytest.raises(ConfigError, match=r"model.ema_decay must be"):
        build_recipe(shrink(cfg))


def test_init_from_ema_starts_the_generators_from_the_average(ema_run, tmp_path):
    from gancolor.errors import CheckpointError
    from gancolor.resume import init_weights_from

    ckpt = load_checkpoint(ema_run)
    for ema in (False, True):
        recipe, _ = load_recipe(ema_run, use_ema=False)
        with torch.no_grad():  # the same nets with other weights, for init_from to replace
            for parameter in recipe.parameters():
                parameter.zero_()
        init_weights_from(recipe, str(ema_run), ema=ema)
        expected = ckpt["ema"]["generator"] if ema else generator_weights(ckpt)
        assert all(torch.equal(v, expected[k]) for k, v in recipe.generator.state_dict().items())
        discriminator = {k.removeprefix("discriminator."): v for k, v in ckpt["nets"].items() if k.startswith("discriminator.")}
        assert all(torch.equal(v, discriminator[k]) for k, v in recipe.discriminator.state_dict().items())
    assert not all(torch.equal(v, generator_weights(ckpt)[k]) for k, v in ckpt["ema"]["generator"].items())
    plain = tiny_checkpoint(tmp_path / "no-ema.pt")
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        init_weights_from(load_recipe(plain)[0], str(plain), ema=True)
