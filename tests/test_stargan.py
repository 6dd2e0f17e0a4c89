"""StarGAN: named colour transforms, labelled domains, the nets, one iteration with
n_critic, the translation report, checkpoints, the CLI."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, crops, one_error_line, same, snapshot, trained_by_cli, write_photo_folder
from helpers import read_metrics as metrics
from helpers import save_photo as save

from gancolor import color
from gancolor.build import build
from gancolor.checkpoint import atomic_save, load_checkpoint, load_recipe, restore_trainer_state, trainer_state
from gancolor.data import DomainsData
from gancolor.errors import ConfigError, DataError
from gancolor.models.stargan import StarGAN
from gancolor.nets import StarGANDiscriminator, StarGANGenerator
from gancolor.trainer import Trainer

DOMAINS = ["gray", "color", "sepia"]
LOSS = {"gan_mode": "wgan-gp", "lambda_gp": 10.0, "lambda_cls": 1.0, "lambda_rec": 10.0}


def make_recipe(color_space: str = "rgb", n_critic: int = 2, **loss) -> StarGAN:
    return StarGAN(
        generator=functools.partial(StarGANGenerator, conv_dim=8, repeat_num=2),
        discriminator=functools.partial(StarGANDiscriminator, conv_dim=8, image_size=32),
        loss={**LOSS, **loss},
        domains=DOMAINS,
        color_space=color_space,
        n_critic=n_critic,
    )


def domain_batch(photos) -> dict[str, torch.Tensor]:
    rgb = crops(photos)
    domain = torch.tensor([0, 1, 2, 1])
    image = torch.stack([color.apply_color_transform(DOMAINS[int(d)], x[None])[0] for x, d in zip(rgb, domain)])
    return {"image": image, "domain": domain}


# -- named colour transforms ---------------------------------------------------------------


def test_gray_keeps_lightness_and_drops_chroma(photos):
    rgb = crops(photos)
    gray = color.apply_color_transform("gray", rgb)
    L, ab = color.rgb_to_lab_normalized(gray)
    assert (L - color.rgb_to_lightness(rgb)).abs().max() < 2e-3 and ab.abs().max() < 2e-3


def test_sepia_matrix_and_identity_known_values():
    white, mid = torch.ones(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.5)
    assert color.to_sepia(white).flatten().tolist() == pytest.approx([1.0, 1.0, 0.937])  # clipped highlights
    assert color.to_sepia(mid).flatten().tolist() == pytest.approx([0.6755, 0.6015, 0.4685])
    assert torch.equal(color.apply_color_transform("color", mid), mid)


def test_warm_and_cool_shift_red_against_blue(photos):
    rgb = crops(photos)
    ratio = lambda x: (x[:, 0].mean() / x[:, 2].mean()).item()
    assert ratio(color.to_warm(rgb)) > ratio(rgb) > ratio(color.to_cool(rgb))
    gray = torch.full((1, 3, 2, 2), 0.5)
    warm = color.to_warm(gray)[0, :, 0, 0]
    assert warm[0] > warm[1] > warm[2]  # neutral turns orange


def test_transforms_take_uint8_and_reject_unknown_names():
    u8 = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    for name in color.COLOR_TRANSFORMS:
        out = color.apply_color_transform(name, u8)
        assert out.dtype == torch.uint8 and out.shape == u8.shape
    assert torch.equal(color.apply_color_transform("color", u8), u8)
    with pytest.raises(ConfigError, match="night"):
        color.apply_color_transform("night", u8)


# -- domains data ----------------------------------------------------------------------------


@pytest.fixture
def photo_folder(tmp_path, photos) -> Path:
    return write_photo_folder(tmp_path / "photos", photos, copies=2)


def test_transforms_spread_each_batch_over_the_domains(photo_folder):
    data = DomainsData(photo_folder, domains=["gray", "color", "sepia", "warm"], image_size=32, batch_size=5, num_workers=0)
    assert data.n_domains == 4 and data.train_size == 7 and data.val_size == 1
    loader = data.train_loader()
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        raw = next(iter(loader))
        batch = data.device_batch(raw, "cpu")
        labels = batch["domain"]
        assert labels.dtype == torch.long and set(labels.tolist()) == {0, 1, 2, 3}
        rgb = color.uint8_to_float(raw["rgb"])
        for i, k in enumerate(labels.tolist()):
            expected = color.apply_color_transform(data.domains[k], rgb[i : i + 1])[0]
            assert torch.allclose(batch["image"][i], expected, atol=1e-6), (epoch, i, data.domains[k])
        again = data.device_batch(raw, "cpu")
        assert torch.equal(again["domain"], labels)  # no hidden random state
    assert set(next(iter(data.val_loader()))) >= {"rgb"}


def test_labelled_folders_give_domains_and_validate_on_colour(tmp_path, photos):
    root = tmp_path / "looks"
    for j, photo in enumerate(photos):
        save(photo, root / "day" / f"d{j}.png")
        save(np.ascontiguousarray(photo[:, :, ::-1]), root / "night" / f"n{j}.png")
    data = DomainsData(root, domains=["night", "day"], source="folders", color_domain="day", image_size=32, batch_size=2, num_workers=0, val_fraction=0.25)
    data.setup()
    assert data.val_size == 1 and all("/day/" in p for p in data.val_paths)
    dataset = data._datasets()[0]
    assert sorted(dataset.labels.values()) == [0] * 4 + [1] * 3
    raw = next(iter(data.train_loader()))
    batch = data.device_batch(raw, "cpu")
    for path, label in zip(raw["path"], batch["domain"].tolist()):
        assert Path(path).parent.name == ["night", "day"][label]


def test_domain_mistakes_are_one_line_errors(tmp_path, photo_folder):
    with pytest.raises(ConfigError, match="night"):
        DomainsData(photo_folder, domains=["gray", "night", "color"])
    with pytest.raises(ConfigError, match="at least 2"):
        DomainsData(photo_folder, domains=["color"])
    with pytest.raises(ConfigError, match="color_domain"):
        DomainsData(photo_folder, domains=["gray", "sepia"])
    with pytest.raises(ConfigError, match="data.source"):
        DomainsData(photo_folder, source="labels")
    with pytest.raises(ConfigError, match="needs a folder"):
        DomainsData(None, domains=["a", "color"], source="folders")
    with pytest.raises(DataError, match="missing under .*: gray, color, sepia"):
        DomainsData(photo_folder, source="folders").setup()


# -- the nets ----------------------------------------------------------------------------------


def test_generator_is_conditioned_on_the_tiled_domain_code():
    torch.manual_seed(0)
    G = StarGANGenerator(n_domains=3, conv_dim=8, repeat_num=1)
    assert G.main[0].in_channels == 3 + 3
    x = torch.rand(2, 3, 30, 22) * 2 - 1
    a, b = G(x, torch.tensor([0, 0])), G(x, torch.tensor([2, 2]))
    assert a.shape == (2, 3, 30, 22) and a.abs().max() <= 1
    assert not torch.allclose(a, b)
    assert torch.equal(G(x, torch.tensor([2, 2])), G(x, torch.eye(3)[[2, 2]]))  # labels or one-hot codes


def test_discriminator_heads_at_any_size():
    D = StarGANDiscriminator(n_domains=3, image_size=128, conv_dim=8)
    assert D.stride == 64 and D.cls_size == 2  # the reference's 6 layers and 2x2 map at 128 px
    for size in [(128, 128), (37, 50), (8, 8)]:
        src, cls = D(torch.rand(2, 3, *size))
        assert src.shape[:2] == (2, 1) and cls.shape == (2, 3)
    assert StarGANDiscriminator(n_domains=2, image_size=32, conv_dim=8).cls_size == 2


# -- one iteration ---------------------------------------------------------------------------


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_d_every_iteration_g_every_n_critic_with_d_frozen(photos, color_space):
    torch.manual_seed(0)
    recipe = make_recipe(color_space, n_critic=2)
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    batch = domain_batch(photos)
    seen: dict[str, dict] = {}
    trainer.optimizers["D"].register_step_post_hook(lambda *_: seen.update(D=(snapshot(recipe.G), snapshot(recipe.D))))
    trainer.optimizers["G"].register_step_post_hook(lambda *_: seen.update(G=(snapshot(recipe.G), snapshot(recipe.D))))
    assert [(s.name, s.every, s.frozen) for s in recipe.adversarial_steps()] == [("D", 1, ()), ("G", 2, ("D",))]

    # yunjey/stargan's (i + 1) % n_critic == 0: the first iteration trains D only.
    g0 = snapshot(recipe.G)
    logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration=0)
    assert "G" not in seen and same(g0, snapshot(recipe.G)) and not any(k.startswith("G/") for k in logs)

    seen.clear()
    g1, d1 = snapshot(recipe.G), snapshot(recipe.D)
    logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration=1)
    assert same(g1, seen["D"][0]) and not same(d1, seen["D"][1])  # D step: D moves, G stays
    assert not same(seen["D"][0], seen["G"][0]) and same(seen["D"][1], seen["G"][1])  # G step: D frozen
    assert all(p.requires_grad for p in recipe.D.parameters())
    names = {"D/loss", "D/real", "D/fake", "D/cls", "D/gp", "D/real_acc", "G/loss", "G/fake", "G/cls", "G/rec"}
    names |= {f"G/{what}/{d}" for d in DOMAINS for what in ("strength", "fake_acc")}
    assert names <= set(logs) and all(torch.isfinite(v) for v in logs.values())
    assert logs["D/gp"] > 0
    expected = logs["D/real"] + logs["D/fake"] + logs["D/cls"] + 10 * logs["D/gp"]
    assert logs["D/loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["G/loss"].item() == pytest.approx((logs["G/fake"] + 10 * logs["G/rec"] + logs["G/cls"]).item(), rel=1e-5)


def test_translation_report_shows_a_generator_that_reproduces_its_input(photos):
    """The seed's failure: G(x, c) = x whatever c. Strength is then 0 for every domain."""
    recipe = make_recipe()

    class Copy(torch.nn.Module):
        def forward(self, x, c):
            return x

    recipe.G = Copy()
    batch = domain_batch(photos)
    x = color.encode(batch["image"], "rgb")
    report = recipe.translation_report(batch["image"], x, batch["domain"])
    assert all(report[f"strength/{d}"].item() < 1e-6 for d in DOMAINS)
    assert set(report) == {f"{w}/{d}" for d in DOMAINS for w in ("strength", "fake_acc")}


def test_translation_strength_is_measured_on_images_not_already_there(photos):
    recipe = make_recipe()

    class ToGray(torch.nn.Module):  # a "generator" that makes everything gray
        def forward(self, x, c):
            return color.encode(color.to_gray(color.decode(x, "rgb")), "rgb")

    recipe.G = ToGray()
    batch = domain_batch(photos)  # domains gray, color, sepia, color
    report = recipe.translation_report(batch["image"], color.encode(batch["image"], "rgb"), batch["domain"])
    colourful = batch["image"][1:]  # the three images not already gray
    expected = (color.to_gray(colourful) - colourful).abs().flatten(1).mean(1).mean()
    assert report["strength/gray"].item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("color_space", ["rgb", "lab"])
def test_colorize_translates_gray_into_the_colour_domain(color_space):
    recipe = make_recipe(color_space).eval()
    assert recipe.target == DOMAINS.index("color")
    L = torch.rand(2, 1, 24, 20) * 2 - 1
    ab = recipe.colorize(L)
    assert ab.shape == (2, 2, 24, 20) and ab.dtype == torch.float32 and ab.abs().max() <= 1


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match="lambda_gp > 0"):
        make_recipe(lambda_gp=0.0)
    with pytest.raises(ConfigError, match="target_domain"):
        StarGAN(functools.partial(StarGANGenerator), functools.partial(StarGANDiscriminator), LOSS, DOMAINS, target_domain="sepiaa")
    with pytest.raises(ConfigError, match="_partial_"):
        StarGAN(StarGANGenerator(3), functools.partial(StarGANDiscriminator), LOSS, DOMAINS)
    with pytest.raises(ConfigError, match="n_critic"):
        make_recipe(n_critic=0)
    with pytest.raises(ConfigError, match="pretrain_epochs=0"):
        make_recipe().pretrain_steps()
    make_recipe(gan_mode="lsgan", lambda_gp=0.0)  # another GAN objective without the penalty is fine


def test_checkpoint_holds_everything_to_continue_exactly(tmp_path, photos):
    def fresh() -> tuple[Trainer, StarGAN]:
        torch.manual_seed(0)
        recipe = make_recipe()
        trainer = Trainer(device="cpu", progress_bar=False)
        trainer.setup(recipe)
        trainer.config = {"model": {"_target_": "gancolor.models.stargan.StarGAN"}}
        trainer.logger = None
        return trainer, recipe

    batch = domain_batch(photos)
    trainer, recipe = fresh()
    for i in range(3):
        trainer.train_iteration(recipe.adversarial_steps(), batch, i)
    path = atomic_save(trainer_state(trainer, "adversarial"), tmp_path / "last.pt")
    other, restored = fresh()
    restore_trainer_state(other, load_checkpoint(path))
    for i in range(3, 5):
        torch.manual_seed(i)
        a = trainer.train_iteration(recipe.adversarial_steps(), batch, i)
        torch.manual_seed(i)
        b = other.train_iteration(restored.adversarial_steps(), batch, i)
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}
    assert same(snapshot(recipe), snapshot(restored))


# -- configuration and the command line ------------------------------------------------


def test_model_stargan_picks_its_nets_data_and_yunjey_defaults():
    try:
        cfg = compose("model=stargan")
    except Exception as exc:  # noqa: BLE001 - the message is what matters here
        pytest.fail(f"model=stargan does not compose ({exc}); conf/config.yaml must list `model` after `data` and `trainer`")
    assert cfg.data._target_ == "gancolor.data.DomainsDataModule" and list(cfg.data.domains) == DOMAINS
    assert cfg.model.domains == cfg.data.domains and cfg.model.target_domain == "color"
    assert (cfg.loss.gan_mode, cfg.loss.lambda_gp, cfg.loss.lambda_cls, cfg.loss.lambda_rec) == ("wgan-gp", 10.0, 1.0, 10.0)
    assert (cfg.model.n_critic, cfg.model.g_lr, cfg.model.d_lr, cfg.model.beta1, cfg.model.beta2) == (5, 1e-4, 1e-4, 0.5, 0.999)
    assert cfg.trainer.pretrain_epochs == 0 and cfg.trainer.lr_decay_epochs is None  # null: the second half
    trainer = build(compose("model=stargan", "trainer.max_epochs=4", "trainer.device=cpu").trainer, "trainer")
    assert (trainer.lr_policy.max_epochs, trainer.lr_policy.decay_epochs) == (4, 2)
    custom = compose("model=stargan", "data.domains=[gray,color,warm,cool]")
    assert list(custom.model.domains) == ["gray", "color", "warm", "cool"]


TINY = [
    "model=stargan",
    "data.image_size=32",
    "data.batch_size=4",
    "data.repeats=2",
    "generator.conv_dim=8",
    "generator.repeat_num=1",
    "discriminator.conv_dim=8",
    "model.n_critic=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=2",
    "trainer.progress_bar=false",
    "data.num_workers=0",
    "logger=none",
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache) -> dict[str, Path]:
    """`python -m gancolor model=stargan` on the sample photos, once for this module."""
    return trained_by_cli(tmp_path_factory.mktemp("stargan_cli"), TINY, cache)


@pytest.mark.slow
def test_cli_trains_on_the_sample_photos_and_its_checkpoint_colorizes(cli_run, photos):
    rows = metrics(cli_run["run"])
    d_rows = [r for r in rows if "train/D/loss" in r]
    g_rows = [r for r in rows if "train/G/loss" in r]
    # 3 steps per epoch, 2 epochs, n_critic 2 counted over the run: G at global steps 1, 3
    # and 5 (after every second D step), logged as steps 2, 4 and 6.
    assert len(d_rows) == 6 and [r["step"] for r in g_rows] == [2, 4, 6]
    assert {f"train/G/strength/{d}" for d in DOMAINS} | {f"train/G/fake_acc/{d}" for d in DOMAINS} <= set(g_rows[-1])
    assert len([r for r in rows if "val/colorfulness_ratio" in r]) == 2
    assert d_rows[0]["lr/D"] == 1e-4 and d_rows[-1]["lr/D"] == pytest.approx(5e-5)  # the recipe's decay over the second half: epoch 2

    recipe, ckpt = load_recipe(cli_run["run"] / "checkpoints" / "last.pt")
    assert ckpt["recipe"] == "stargan" and recipe.domains == DOMAINS
    L, _ = color.rgb_to_lab_normalized(crops(photos, size=40))
    ab = recipe.colorize(L)
    assert ab.shape == (4, 2, 40, 40) and torch.isfinite(ab).all() and ab.std() > 0



@pytest.mark.slow
def test_a_resume_checks_its_command_line_against_the_runs_own_config(cli_run):
    """resume= without model=stargan: StarGAN's keys are keys, the run's own
    model.n_critic=2 changes nothing, and the yaml's default 5 is a change: overrides
    are checked against the run's stored config, composed with its recorded choices."""
    import warm

    run, before = cli_run["run"], (cli_run["run"] / "train.log").read_text()
    own = warm.run_gancolor([f"resume={run}", "model.n_critic=2", "trainer.max_steps=6"], cli_run["tmp"], cli_run["cache"])
    assert "leaves nothing to train" in one_error_line(own)  # past the override check
    refused = warm.run_gancolor([f"resume={run}", "model.n_critic=5", "trainer.max_steps=8"], cli_run["tmp"], cli_run["cache"])
    assert "cannot change model.n_critic=5 (allowed" in one_error_line(refused)
    assert (run / "train.log").read_text() == before

def test_an_unlabelled_batch_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="data=domains"):
        make_recipe().discriminator_step({"L": torch.zeros(1, 1, 8, 8), "ab": torch.zeros(1, 2, 8, 8)}, {})


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_iteration_runs_on_cpu(photos, precision):
    torch.manual_seed(0)
    recipe = make_recipe(n_critic=1)
    trainer = Trainer(device="cpu", precision=precision, progress_bar=False)
    trainer.setup(recipe)
    g0 = snapshot(recipe.G)
    for iteration in range(20):  # fp16: the GradScaler may skip steps while it backs off
        logs = trainer.train_iteration(recipe.adversarial_steps(), domain_batch(photos), iteration)
        if not same(g0, snapshot(recipe.G)):
            break
    assert all(torch.isfinite(v) for v in logs.values())
    assert logs["D/gp"] > 0 and not same(g0, snapshot(recipe.G))
