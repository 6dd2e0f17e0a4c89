"""CycleGAN: the ResNet generator, unpaired data, one iteration, checkpoints, the CLI."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, crops, one_error_line, same, snapshot, trained_by_cli, write_photo_folder
from helpers import read_metrics as metrics
from helpers import save_photo as save
from PIL import Image

from gancolor import color
from gancolor.build import build
from gancolor.checkpoint import atomic_save, load_checkpoint, load_recipe, restore_trainer_state, trainer_state
from gancolor.data import UnpairedData
from gancolor.errors import ConfigError, DataError
from gancolor.models.cyclegan import CycleGAN
from gancolor.nets import PatchDiscriminator, ResnetGenerator
from gancolor.trainer import Trainer

LOSS = {"gan_mode": "lsgan", "lambda_cycle": 10.0, "lambda_identity": 0.5, "identity_mode": "unpaired"}


def make_recipe(color_space: str = "lab", pool_size: int = 50, **loss) -> CycleGAN:
    return CycleGAN(
        generator=functools.partial(ResnetGenerator, ngf=8, image_size=32),
        discriminator=functools.partial(PatchDiscriminator, ndf=8, norm="instance"),
        loss={**LOSS, **loss},
        color_space=color_space,
        pool_size=pool_size,
    )


def unpaired_batch(photos, size: int = 32) -> dict[str, torch.Tensor]:
    """Gray versions of two photos as A, two other photos as B: not pairs."""
    return {"A": color.to_gray(crops(photos[:2], size)), "B": crops(photos[2:], size)}


# -- the ResNet generator ------------------------------------------------------------------


def test_resnet_generator_has_the_papers_layout_and_depth():
    assert ResnetGenerator(image_size=256).n_blocks == 9
    assert ResnetGenerator(image_size=128).n_blocks == 6
    assert ResnetGenerator(image_size=32, n_blocks=3).n_blocks == 3
    net = ResnetGenerator(in_channels=3, out_channels=3, ngf=64, n_blocks=9)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    # c7s1-64, d128, d256, 9 x R256 (two convs each), c7s1-3; u128, u64.
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs[:3]] == [(3, 64, 7, 1), (64, 128, 3, 2), (128, 256, 3, 2)]
    assert len(convs) == 3 + 18 + 1 and (convs[-1].in_channels, convs[-1].out_channels, convs[-1].kernel_size[0]) == (64, 3, 7)
    assert [(m.in_channels, m.out_channels) for m in ups] == [(256, 128), (128, 64)]
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in net.modules()) == 2 + 18
    assert isinstance(net.model[-1], torch.nn.Tanh)


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (5, 3)])
def test_resnet_generator_takes_any_size(size):
    net = ResnetGenerator(1, 2, ngf=8, image_size=32).eval()
    out = net(torch.rand(2, 1, *size) * 2 - 1)
    assert out.shape == (2, 2, *size) and out.abs().max() <= 1


# -- unpaired data -------------------------------------------------------------------------


@pytest.fixture
def photo_folder(tmp_path, photos) -> Path:
    return write_photo_folder(tmp_path / "photos", photos, copies=3)


def test_one_folder_splits_into_disjoint_gray_and_colour_halves(photo_folder):
    data = UnpairedData(photo_folder, image_size=32, batch_size=2, num_workers=0)
    data.setup()
    a, b, val = set(data.a_paths), set(data.b_paths), set(data.val_paths)
    assert len(a) + len(b) + len(val) == 12 and val
    assert not (a & b) and not (a & val) and not (b & val), "no photo is seen gray and in colour"
    assert abs(len(a) - len(b)) <= 1
    again = UnpairedData(photo_folder, image_size=32, batch_size=2, num_workers=0, seed=0)
    again.setup()
    assert again.a_paths == data.a_paths and again.b_paths == data.b_paths

    loader = data.train_loader()
    raw = next(iter(loader))
    assert raw["A"].dtype == torch.uint8 and raw["A"].shape == raw["B"].shape == (2, 3, 32, 32)
    assert {Path(p) for p in raw["path"]} <= a and {Path(p) for p in raw["path_B"]} <= b
    batch = data.device_batch(raw, "cpu")
    assert batch["A"].dtype == torch.float32 and (batch["A"].max(1).values - batch["A"].min(1).values).max() < 2e-3
    assert (batch["B"].max(1).values - batch["B"].min(1).values).max() > 0.1
    assert "rgb" in next(iter(data.val_loader()))  # the trainer's validation needs colour truth


def test_pairing_and_crops_are_a_function_of_seed_and_epoch(photo_folder):
    def first(epoch: int, start: int = 0):
        data = UnpairedData(photo_folder, image_size=32, batch_size=2, num_workers=0, seed=3)
        loader = data.train_loader()
        loader.sampler.set_epoch(epoch, start=start)
        return next(iter(loader))

    one, two, other = first(1), first(1), first(2)
    assert torch.equal(one["A"], two["A"]) and torch.equal(one["B"], two["B"]) and one["path_B"] == two["path_B"]
    assert not (torch.equal(one["A"], other["A"]) and torch.equal(one["B"], other["B"]))
    data = UnpairedData(photo_folder, image_size=32, batch_size=1, num_workers=0, seed=3)
    loader = data.train_loader()
    loader.sampler.set_epoch(1)
    second = list(zip(range(2), loader))[1][1]
    loader.sampler.set_epoch(1, start=1)  # what a resume does
    assert torch.equal(next(iter(loader))["B"], second["B"])


def test_cyclegan_layout_reads_trainA_as_gray_and_validates_on_testB(tmp_path, photos):
    root = tmp_path / "gray2color"
    camera = np.repeat(np.asarray(Image.fromarray(photos[0]).convert("L"))[:, :, None], 3, axis=2)
    save(camera, root / "trainA" / "gray.png")  # grayscale files belong in A ...
    save(photos[1], root / "trainA" / "colour.png")  # ... and a colour one there is read as gray
    save(photos[2], root / "trainB" / "b1.png")
    save(photos[3], root / "trainB" / "b2.png")
    save(camera, root / "trainB" / "gray_in_b.png")  # not colour: skipped
    save(photos[0], root / "testB" / "t.png")
    data = UnpairedData(root, image_size=32, batch_size=1, num_workers=0)
    data.setup()
    assert [p.name for p in data.a_paths] == ["colour.png", "gray.png"]
    assert [p.name for p in data.b_paths] == ["b1.png", "b2.png"]
    assert [Path(p).name for p in data.val_paths] == ["t.png"]
    raw = data._datasets()[0][0]
    A = data.device_batch({k: v[None] for k, v in raw.items() if k in ("A", "B")}, "cpu")["A"]
    assert (A.max(1).values - A.min(1).values).max() < 2e-3


def test_too_few_photos_is_a_data_error(tmp_path, photos):
    save(photos[0], tmp_path / "one" / "a.png")
    with pytest.raises(DataError, match="at least 2 training photos"):
        UnpairedData(tmp_path / "one", image_size=32, val_fraction=0.0).setup()


@pytest.mark.parametrize("present, missing", [("trainA", "trainB"), ("trainB", "trainA")])
def test_half_a_cyclegan_layout_is_a_data_error_not_the_one_folder_mode(tmp_path, photos, present, missing):
    # Photos enough for the one-folder split: before, it trained on this half's photos alone.
    for i in range(4):
        save(photos[i], tmp_path / "root" / present / f"{i}.png")
    with pytest.raises(DataError) as error:
        UnpairedData(tmp_path / "root", image_size=32, num_workers=0).setup()
    message = str(error.value)
    assert f"has {present}/ but no {missing}/" in message and str(tmp_path / "root" / missing) in message
    assert "\n" not in message


# -- one iteration -------------------------------------------------------------------------


@pytest.mark.parametrize("color_space", ["lab", "rgb"])
def test_g_step_with_frozen_discriminators_then_d_step(photos, color_space):
    torch.manual_seed(0)
    recipe = make_recipe(color_space)
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    nets = ("G_AB", "G_BA", "D_A", "D_B")
    before = {n: snapshot(getattr(recipe, n)) for n in nets}
    seen: dict[str, dict] = {}
    trainer.optimizers["G"].register_step_post_hook(lambda *_: seen.update(G={n: snapshot(getattr(recipe, n)) for n in nets}))
    trainer.optimizers["D"].register_step_post_hook(lambda *_: seen.update(D={n: snapshot(getattr(recipe, n)) for n in nets}))
    assert [s.name for s in recipe.adversarial_steps()] == ["G", "D"]

    logs = trainer.train_iteration(recipe.adversarial_steps(), unpaired_batch(photos), iteration=0)

    # G step: both generators move, both discriminators stay (frozen).
    for n in ("G_AB", "G_BA"):
        assert not same(before[n], seen["G"][n]), n
    for n in ("D_A", "D_B"):
        assert same(before[n], seen["G"][n]), n
    # D step: both discriminators move, the generators stay where the G step put them.
    for n in ("D_A", "D_B"):
        assert not same(seen["G"][n], seen["D"][n]), n
    for n in ("G_AB", "G_BA"):
        assert same(seen["G"][n], seen["D"][n]), n
    assert all(p.requires_grad for n in ("D_A", "D_B") for p in getattr(recipe, n).parameters())
    assert {"G/loss", "G/gan_AB", "G/gan_BA", "G/cycle_A", "G/cycle_B", "G/idt_B",
            "D/loss", "D/A_loss", "D/B_loss", "D/A_out_real", "D/B_out_fake"} <= set(logs)
    # Unpaired: in Lab, G_AB applied to B would see only b's L and fit b's own colours.
    assert ("G/idt_A" in logs) == (color_space == "rgb")
    assert all(torch.isfinite(v) for v in logs.values())
    idt = logs["G/idt_B"] + logs.get("G/idt_A", 0)
    expected = logs["G/gan_AB"] + logs["G/gan_BA"] + 10 * (logs["G/cycle_A"] + logs["G/cycle_B"]) + 5 * idt
    assert logs["G/loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert recipe.pool_A.count == recipe.pool_B.count == 2  # the fakes went into the history


def test_lab_nets_keep_lightness_and_channels(photos):
    recipe = make_recipe("lab")
    assert (recipe.G_AB.model[1].in_channels, recipe.G_AB.model[-2].out_channels) == (1, 2)
    assert (recipe.G_BA.model[1].in_channels, recipe.G_BA.model[-2].out_channels) == (3, 1)
    real_A, _ = recipe.real_images(unpaired_batch(photos), {})
    fake_B = recipe.colorize_gray(real_A)
    assert fake_B.shape[1] == 3 and torch.equal(fake_B[:, :1], real_A)  # a colouriser keeps L
    rgb = make_recipe("rgb")
    assert (rgb.G_AB.model[1].in_channels, rgb.G_BA.model[-2].out_channels) == (3, 3)


@pytest.mark.parametrize("color_space", ["lab", "rgb"])
def test_colorize_maps_lightness_to_ab(color_space):
    recipe = make_recipe(color_space).eval()
    L = torch.rand(2, 1, 20, 28) * 2 - 1
    ab = recipe.colorize(L)
    assert ab.shape == (2, 2, 20, 28) and ab.dtype == torch.float32 and ab.abs().max() <= 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert recipe.colorize(L).shape == (2, 2, 20, 28)


def g_ab_inputs(recipe: CycleGAN) -> list[torch.Tensor]:
    """Every input G_AB is given from now on."""
    seen: list[torch.Tensor] = []
    recipe.G_AB.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("mode", ["unpaired", "supervised"])
def test_only_the_supervised_identity_fits_a_photos_own_colours_from_its_own_l(photos, mode):
    torch.manual_seed(0)
    recipe = make_recipe("lab", identity_mode=mode)
    batch = unpaired_batch(photos)
    real_A, real_B = recipe.real_images(batch, {})
    seen = g_ab_inputs(recipe)
    _, logs = recipe.generator_step(batch, {})
    fed_own_L = any(x.shape == real_B[:, :1].shape and torch.equal(x, real_B[:, :1]) for x in seen)
    assert fed_own_L == (mode == "supervised") and ("idt_A" in logs) == (mode == "supervised")
    if mode == "supervised":  # today's Lab term: (L_b, G_AB(L_b)) against b, in the reference's name
        with torch.no_grad():
            expected = torch.nn.functional.l1_loss(recipe.colorize_gray(real_B[:, :1]), real_B)
        assert logs["idt_A"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("color_space", ["lab", "rgb"])
def test_supervised_identity_gives_g_ab_the_gray_version_of_b(photos, color_space):
    recipe = make_recipe(color_space, identity_mode="supervised")
    real_A, real_B = recipe.real_images(unpaired_batch(photos), {})
    gray = recipe.gray_version(real_B)
    assert gray.shape == real_A.shape
    if color_space == "rgb":
        L = color.encode_lightness(color.decode(real_B, "rgb"))
        assert torch.allclose(color.encode_lightness(color.decode(gray, "rgb")), L, atol=2e-3)
        assert (gray.max(1).values - gray.min(1).values).max() < 1e-3  # neutral: three equal channels
    else:
        assert torch.equal(gray, real_B[:, :1])


def test_lambda_a_and_b_weigh_each_direction_as_the_reference(photos):
    torch.manual_seed(0)
    recipe = make_recipe("rgb", lambda_A=3.0, lambda_B=7.0, lambda_identity=0.5)
    _, logs = recipe.generator_step(unpaired_batch(photos), {})
    # The reference: idt_A (G_A applied to B) is weighed by lambda_B, idt_B by lambda_A.
    expected = (logs["gan_AB"] + logs["gan_BA"] + 3 * logs["cycle_A"] + 7 * logs["cycle_B"]
                + 0.5 * (7 * logs["idt_A"] + 3 * logs["idt_B"]))
    assert logs["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    zero = make_recipe("lab", lambda_B=0.0)
    assert (zero.lambda_A, zero.lambda_B) == (10.0, 0.0)


def test_a_loss_config_from_before_the_new_options_keeps_its_meaning():
    old = {"gan_mode": "lsgan", "lambda_cycle": 4.0, "lambda_identity": 0.5}
    lab = CycleGAN(functools.partial(ResnetGenerator, ngf=8), functools.partial(PatchDiscriminator, ndf=8), old)
    rgb = CycleGAN(functools.partial(ResnetGenerator, ngf=8), functools.partial(PatchDiscriminator, ndf=8), old, color_space="rgb")
    assert (lab.lambda_A, lab.lambda_B) == (4.0, 4.0)
    # The identity term each trained with: Lab's fitted G_AB(L of b) to b, RGB's was the reference's.
    assert (lab.identity_mode, rgb.identity_mode) == ("supervised", "unpaired")
    assert make_recipe(lambda_A=None).lambda_A == 10.0


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match="identity_mode"):
        make_recipe(identity_mode="paired")
    with pytest.raises(ConfigError, match="lambda_B"):
        make_recipe(lambda_B=-1.0)
    with pytest.raises(ConfigError, match="_partial_"):
        CycleGAN(ResnetGenerator(), functools.partial(PatchDiscriminator), LOSS)
    with pytest.raises(ConfigError, match="color_space"):
        make_recipe("hsv")
    with pytest.raises(ConfigError, match="pretrain_epochs=0"):
        make_recipe().pretrain_steps()


def test_checkpoint_holds_everything_to_continue_exactly(tmp_path, photos):
    """Nets, optimisers and both image pools (contents and random state) come back:
    the continued run and a run restored from the checkpoint take identical steps."""

    def fresh() -> tuple[Trainer, CycleGAN]:
        torch.manual_seed(0)
        recipe = make_recipe(pool_size=3)
        trainer = Trainer(device="cpu", progress_bar=False)
        trainer.setup(recipe)
        trainer.config = {"model": {"_target_": "gancolor.models.cyclegan.CycleGAN"}}
        trainer.logger = None
        return trainer, recipe

    batch = unpaired_batch(photos)
    trainer, recipe = fresh()
    steps = recipe.adversarial_steps()
    for i in range(3):  # 6 fakes per pool of 3: full, and swapping
        trainer.train_iteration(steps, batch, i)
    path = atomic_save(trainer_state(trainer, "adversarial"), tmp_path / "last.pt")
    assert {"pool_A._extra_state", "pool_B._extra_state"} <= set(load_checkpoint(path)["nets"])

    other, restored = fresh()
    restore_trainer_state(other, load_checkpoint(path))
    assert restored.pool_B.count == 3 and torch.equal(restored.pool_B.images, recipe.pool_B.images)
    for i in range(3, 6):
        torch.manual_seed(i)
        a = trainer.train_iteration(steps, batch, i)
        torch.manual_seed(i)
        b = other.train_iteration(restored.adversarial_steps(), batch, i)
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}
    for x, y in zip(recipe.state_dict().values(), restored.state_dict().values()):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
    assert torch.equal(recipe.pool_A.images, restored.pool_A.images)


# -- configuration and the command line ------------------------------------------------


def test_model_cyclegan_picks_its_nets_data_and_schedule():
    try:
        cfg = compose("model=cyclegan")
    except Exception as exc:  # noqa: BLE001 - the message is what matters here
        pytest.fail(f"model=cyclegan does not compose ({exc}); conf/config.yaml must list `model` after `data` and `trainer`")
    assert cfg.data._target_ == "gancolor.data.UnpairedDataModule" and cfg.data.root is None
    assert cfg.generator._target_ == "gancolor.nets.ResnetGenerator" and cfg.generator._partial_
    assert cfg.discriminator.norm == "instance" and cfg.loss.gan_mode == "lsgan"
    assert (cfg.loss.lambda_cycle, cfg.loss.lambda_identity, cfg.model.pool_size) == (10.0, 0.5, 50)
    assert (cfg.loss.lambda_A, cfg.loss.lambda_B, cfg.loss.identity_mode) == (10.0, 10.0, "unpaired")
    shared = compose("model=cyclegan", "loss.lambda_cycle=3", "loss.lambda_B=0")
    assert (shared.loss.lambda_A, shared.loss.lambda_B) == (3, 0)  # lambda_cycle is the shared default
    assert cfg.trainer.pretrain_epochs == 0
    # Linear decay over the second half of whatever max_epochs is (the reference's
    # n_epochs + n_epochs_decay, 100 + 100): a short run needs no lr_decay_epochs.
    assert cfg.trainer.lr_decay_epochs is None
    for epochs in (4, 40):
        trainer = build(compose("model=cyclegan", f"trainer.max_epochs={epochs}", "trainer.device=cpu").trainer, "trainer")
        assert (trainer.lr_policy.max_epochs, trainer.lr_policy.decay_epochs) == (epochs, epochs // 2)
    user = compose("model=cyclegan", "generator=unet", "trainer.max_epochs=4", "data.root=/x")
    assert user.generator._target_ == "gancolor.nets.UNetGenerator" and user.generator.norm == "instance"
    assert not user.generator.use_dropout and user.trainer.max_epochs == 4 and user.data.root == "/x"


TINY = [
    "model=cyclegan",
    "data.image_size=32",
    "data.repeats=1",
    "generator.ngf=8",
    "generator.n_blocks=2",
    "discriminator.ndf=8",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_samples=2",
    "trainer.progress_bar=false",
    "data.num_workers=0",
    "logger=none",
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache) -> dict[str, Path]:
    """`python -m gancolor model=cyclegan` on the sample photos, once for this module."""
    return trained_by_cli(tmp_path_factory.mktemp("cyclegan_cli"), TINY, cache)


@pytest.mark.slow
def test_cli_trains_on_the_sample_photos_and_its_checkpoint_colorizes(cli_run, photos):
    run = cli_run["run"]
    rows = metrics(run)
    train = [r for r in rows if "train/G/loss" in r]
    val = [r for r in rows if "val/colorfulness_ratio" in r]
    assert len(train) == 6 and len(val) == 2  # 3 A photos, batch 1, 2 epochs
    assert {"train/D/A_loss", "train/D/B_loss", "train/G/cycle_A", "train/G/idt_B"} <= set(train[-1])
    assert train[0]["lr/G"] == 2e-4 and train[-1]["lr/G"] == pytest.approx(1e-4)  # the recipe's decay over the second half: epoch 2
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["recipe"] == "cyclegan" and ckpt["nets"]["pool_B._extra_state"]["count"] == 6

    recipe, _ = load_recipe(run / "checkpoints" / "last.pt")
    L, _ = color.rgb_to_lab_normalized(crops(photos, size=40))
    ab = recipe.colorize(L)
    assert ab.shape == (4, 2, 40, 40) and torch.isfinite(ab).all() and ab.std() > 0


@pytest.mark.slow
def test_a_resume_checks_its_command_line_against_the_runs_own_config(cli_run):
    """resume= without model=cyclegan: CycleGAN's keys are keys (the run's recorded group
    choices compose the config the command line is checked against), the run's own
    values change nothing, and another value is the "cannot change" line. Refused
    before the job starts, so the module's run stays as it was."""
    import warm

    run, before = cli_run["run"], (cli_run["run"] / "train.log").read_text()
    own = warm.run_gancolor([f"resume={run}", "model.pool_size=50", "loss.lambda_A=10", "trainer.max_steps=6"], cli_run["tmp"], cli_run["cache"])
    assert "leaves nothing to train" in one_error_line(own)  # past the override check: the limit is all that stops it
    for change in ("model.pool_size=3", "loss.lambda_A=50"):
        refused = warm.run_gancolor([f"resume={run}", change, "trainer.max_steps=8"], cli_run["tmp"], cli_run["cache"])
        assert f"cannot change {change} (allowed" in one_error_line(refused)
    assert (run / "train.log").read_text() == before

def test_a_paired_batch_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="data=unpaired"):
        make_recipe().generator_step({"L": torch.zeros(1, 1, 8, 8), "ab": torch.zeros(1, 2, 8, 8)}, {})


# fp16 on a CPU is slow and the GradScaler needs a few backed-off iterations first.
@pytest.mark.parametrize("precision", ["bf16", pytest.param("16-mixed", marks=pytest.mark.slow)])
def test_mixed_precision_iteration_runs_on_cpu(photos, precision):
    torch.manual_seed(0)
    recipe = make_recipe("lab")
    trainer = Trainer(device="cpu", precision=precision, progress_bar=False)
    trainer.setup(recipe)
    g0 = snapshot(recipe.G_AB)
    for iteration in range(20):  # fp16: the GradScaler may skip steps while it backs off
        logs = trainer.train_iteration(recipe.adversarial_steps(), unpaired_batch(photos, size=16), iteration)
        if not same(g0, snapshot(recipe.G_AB)):
            break
    assert all(torch.isfinite(v) for v in logs.values())
    assert not same(g0, snapshot(recipe.G_AB))


def test_reference_preprocessing_resize_then_crop(photo_folder):
    # The reference CycleGAN loads 286 px and crops 256; here 40 and 32.
    data = UnpairedData(photo_folder, image_size=32, resize_to=40, batch_size=2, num_workers=0)
    raw = next(iter(data.train_loader()))
    assert raw["A"].shape == raw["B"].shape == (2, 3, 32, 32)
    assert next(iter(data.val_loader()))["rgb"].shape[-2:] == (32, 32)
    with pytest.raises(ConfigError, match="resize_to"):
        UnpairedData(photo_folder, image_size=32, resize_to=16)
