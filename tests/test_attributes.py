"""Multi-label attributes for StarGAN: the attribute file, the data module, BCE domain
classification, one iteration in multi mode, the experiment from the command line."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gancolor import color
from gancolor.checkpoint import load_recipe
from gancolor.data.attributes import AttributesDataModule, read_attribute_file
from gancolor.errors import ConfigError, DataError
from gancolor.losses import attribute_bce
from gancolor.models.stargan import StarGAN
from gancolor.nets import StarGANDiscriminator, StarGANGenerator
from gancolor.trainer import Trainer
from helpers import compose, read_metrics
from helpers import write_attribute_file as write_attributes
from warm import run_gancolor


def write_attribute_file(path: Path, rows: dict[str, list[int]], names=None, count: int | None = None) -> Path:
    return write_attributes(path, rows, ALL_ATTRS if names is None else names, count)

ALL_ATTRS = ["Bald", "Black_Hair", "Blond_Hair", "Male", "Young"]
SELECTED = ["Male", "Black_Hair", "Young"]
LOSS = {"gan_mode": "wgan-gp", "lambda_gp": 10.0, "lambda_cls": 1.0, "lambda_rec": 10.0}


@pytest.fixture
def celeba(tmp_path, photos) -> tuple[Path, dict[str, list[int]]]:
    """8 listed photos (two of them in a subfolder), one unlisted, and their attributes."""
    root = tmp_path / "images"
    rows: dict[str, list[int]] = {}
    rng = np.random.default_rng(0)
    for i in range(8):
        name = f"{i:06d}.png" if i < 6 else f"more/{i:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        photo = photos[i % len(photos)]
        Image.fromarray(photo[20 * i : 20 * i + 64, 30 * i : 30 * i + 64]).save(root / name)
        rows[name] = [int(v) for v in rng.choice([-1, 1], len(ALL_ATTRS))]
    rows["000000.png"][ALL_ATTRS.index("Male")] = 1  # both values of Male occur
    rows["000001.png"][ALL_ATTRS.index("Male")] = -1
    Image.fromarray(photos[0][:64, :64]).save(root / "unlisted.png")
    write_attribute_file(root / "list_attr_celeba.txt", rows)
    return root, rows


def expected(rows: dict[str, list[int]], name: str) -> list[float]:
    return [1.0 if rows[name][ALL_ATTRS.index(a)] == 1 else 0.0 for a in SELECTED]


# -- the attribute file ------------------------------------------------------------------


def test_attribute_file_gives_the_selected_columns_in_their_order(celeba):
    root, rows = celeba
    table = read_attribute_file(root / "list_attr_celeba.txt", SELECTED)
    assert set(table) == set(rows)
    assert all(table[name] == expected(rows, name) for name in rows)


def test_zero_is_read_as_absent(tmp_path):
    path = write_attribute_file(tmp_path / "a.txt", {"x.png": [0, 1, 0, 1, -1]})
    assert read_attribute_file(path, ["Bald", "Black_Hair", "Young"]) == {"x.png": [0.0, 1.0, 0.0]}


def test_attribute_file_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_attribute_file(tmp_path / "missing.txt", SELECTED)
    with pytest.raises(ConfigError, match="Red_Hair not in .* Bald Black_Hair"):
        read_attribute_file(write_attribute_file(tmp_path / "a.txt", {"x.png": [1] * 5}), ["Male", "Red_Hair"])
    with pytest.raises(DataError, match="line 3: 4 values for 5 attributes"):
        read_attribute_file(write_attribute_file(tmp_path / "b.txt", {"x.png": [1] * 4}), SELECTED)
    with pytest.raises(DataError, match="line 4: attribute values must be 1 or -1, got '2'"):
        read_attribute_file(write_attribute_file(tmp_path / "c.txt", {"x.png": [1] * 5, "y.png": [2] * 5}), SELECTED)
    (tmp_path / "d.txt").write_text("Bald Male\nx.png 1 1\n")
    with pytest.raises(DataError, match="number of images"):
        read_attribute_file(tmp_path / "d.txt", SELECTED)


# -- the data module -----------------------------------------------------------------------


def test_data_module_labels_each_listed_photo_with_its_attributes(celeba):
    root, rows = celeba
    data = AttributesDataModule(root, SELECTED, image_size=32, batch_size=4, num_workers=0, val_fraction=0.25)
    data.setup()
    names = {Path(p).relative_to(root).as_posix() for p in data.train_paths + data.val_paths}
    assert names == set(rows) and data.train_size == 6 and data.val_size == 2  # unlisted.png is not used
    raw = next(iter(data.train_loader()))
    assert raw["rgb"].shape == (4, 3, 32, 32) and raw["attributes"].dtype == torch.float32
    for path, attrs in zip(raw["path"], raw["attributes"]):
        assert attrs.tolist() == expected(rows, Path(path).relative_to(root).as_posix())
    batch = data.device_batch(raw, "cpu")
    assert set(batch) == {"image", "attributes"} and batch["image"].dtype == torch.float32
    assert batch["image"].max() <= 1 and torch.equal(batch["attributes"], raw["attributes"])
    assert "rgb" in next(iter(data.val_loader()))  # validation colourises colour photos as always


def test_attr_file_may_live_elsewhere(celeba, tmp_path):
    root, rows = celeba
    elsewhere = write_attribute_file(tmp_path / "attrs.txt", {k: v for k, v in rows.items() if not k.startswith("more/")})
    data = AttributesDataModule(root, SELECTED, attr_file=elsewhere, image_size=32, num_workers=0, val_fraction=0.0)
    assert data.train_size == 6


def test_data_mistakes_are_one_line_errors(celeba, tmp_path):
    root, _ = celeba
    with pytest.raises(ConfigError, match="data.root"):
        AttributesDataModule(None, SELECTED)
    with pytest.raises(ConfigError, match="list of attribute names"):
        AttributesDataModule(root, "Male")
    with pytest.raises(ConfigError, match="repeated"):
        AttributesDataModule(root, ["Male", "Male"])
    elsewhere = write_attribute_file(tmp_path / "attrs.txt", {"nothing_here.png": [1] * 5})
    with pytest.raises(DataError, match="none of the 9 images"):
        AttributesDataModule(root, SELECTED, attr_file=elsewhere).setup()


# -- the recipe in multi mode ----------------------------------------------------------------


def make_recipe(domain_mode: str = "multi", target_domain: str | None = None, n_critic: int = 2) -> StarGAN:
    return StarGAN(
        generator=functools.partial(StarGANGenerator, conv_dim=8, repeat_num=1),
        discriminator=functools.partial(StarGANDiscriminator, conv_dim=8, image_size=32),
        loss=LOSS,
        domains=SELECTED,
        target_domain=target_domain,
        domain_mode=domain_mode,
        n_critic=n_critic,
    )


def test_attribute_bce_sums_over_attributes_and_averages_over_the_batch():
    logits, target = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    per_element = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    assert attribute_bce(logits, target).item() == pytest.approx(per_element.sum(1).mean().item())


def test_one_multi_label_iteration_trains_both_nets_with_bce(celeba):
    root, _ = celeba
    data = AttributesDataModule(root, SELECTED, image_size=32, batch_size=4, num_workers=0, val_fraction=0.25)
    batch = data.device_batch(next(iter(data.train_loader())), "cpu")
    torch.manual_seed(0)
    recipe = make_recipe()
    trainer = Trainer(device="cpu", progress_bar=False)
    trainer.setup(recipe)
    D_before, G_before = copy.deepcopy(recipe.D), copy.deepcopy(recipe.G)

    logs = trainer.train_iteration(recipe.adversarial_steps(), batch, iteration=1)  # (1 + 1) % n_critic == 0: D and G

    for net, before in ((recipe.D, D_before), (recipe.G, G_before)):
        assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), before.parameters()))
    with torch.no_grad():
        logits = D_before(color.encode(batch["image"], "rgb"))[1]
    assert logs["D/cls"].item() == pytest.approx(attribute_bce(logits, batch["attributes"]).item(), rel=1e-5)
    assert logs["D/cls"].item() != pytest.approx(F.cross_entropy(logits, batch["attributes"].argmax(1)).item(), rel=1e-3)
    assert 0 <= logs["D/real_acc"] <= 1 and torch.isfinite(logs["G/cls"])
    assert {f"G/{w}/{a}" for a in SELECTED for w in ("strength", "fake_acc")} <= set(logs)
    assert all(torch.isfinite(v) for v in logs.values())


def test_targets_are_the_batchs_attribute_vectors_shuffled():
    recipe = make_recipe()
    batch = {"image": torch.rand(4, 3, 8, 8), "attributes": torch.eye(3)[[0, 1, 2, 0]]}
    attributes = batch["attributes"]
    torch.manual_seed(3)
    _, c_org, c_trg = recipe.real_images(batch, {})
    torch.manual_seed(3)
    assert torch.equal(c_org, attributes) and torch.equal(c_trg, attributes[torch.randperm(4)])


def test_multi_label_report_flips_each_attribute(celeba):
    recipe = make_recipe()
    recipe.G.forward = lambda x, c: x  # the seed's failure: G ignores the code
    rgb = torch.rand(2, 3, 32, 32)
    report = recipe.translation_report(rgb, color.encode(rgb, "rgb"), torch.tensor([[1.0, 0, 1], [0, 0, 1]]))
    assert set(report) == {f"{w}/{a}" for a in SELECTED for w in ("strength", "fake_acc")}
    assert all(report[f"strength/{a}"].item() < 1e-6 for a in SELECTED)  # the seed's failure, per attribute


@pytest.mark.parametrize("target_domain, code", [(None, [0.0, 0.0, 0.0]), ("Black_Hair", [0.0, 1.0, 0.0])])
def test_colorize_targets_the_named_attribute_alone(target_domain, code):
    recipe = make_recipe(target_domain=target_domain).eval()
    seen: list[torch.Tensor] = []
    recipe.G.register_forward_pre_hook(lambda _, args: seen.append(args[1]))
    ab = recipe.colorize(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert ab.shape == (2, 2, 16, 16) and seen[0].tolist() == [code, code]


def test_domain_mode_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match="domain_mode"):
        make_recipe(domain_mode="both")
    with pytest.raises(ConfigError, match="target_domain None"):
        make_recipe(domain_mode="single", target_domain=None)
    with pytest.raises(ConfigError, match="data=attributes"):
        make_recipe().discriminator_step({"image": torch.rand(2, 3, 32, 32), "domain": torch.tensor([0, 1])}, {})
    with pytest.raises(ConfigError, match="data=domains"):
        make_recipe("single", "Male").discriminator_step({"image": torch.rand(2, 3, 32, 32), "attributes": torch.eye(3)[:2]}, {})


# -- configuration and the command line ------------------------------------------------


def test_experiment_picks_multi_mode_and_the_attributes_data():
    cfg = compose("experiment=stargan_attributes", "data.selected_attrs=[Male,Young]")
    assert cfg.data._target_ == "gancolor.data.AttributesDataModule"
    assert cfg.model._target_ == "gancolor.models.stargan.StarGAN" and cfg.model.domain_mode == "multi"
    assert list(cfg.model.domains) == ["Male", "Young"] and cfg.model.target_domain is None
    assert compose("model=stargan").model.domain_mode == "single"


@pytest.mark.slow
def test_cli_trains_the_experiment_and_its_checkpoint_colorizes(celeba, tmp_path):
    root, _ = celeba
    run = tmp_path / "run"
    args = [
        "experiment=stargan_attributes", f"data.root={root}", f"data.selected_attrs=[{','.join(SELECTED)}]",
        "data.image_size=32", "data.batch_size=2", "data.val_fraction=0.25", "data.num_workers=0",
        "generator.conv_dim=8", "generator.repeat_num=1", "discriminator.conv_dim=8", "model.n_critic=2",
        "trainer.max_epochs=1", "trainer.lr_decay_epochs=0", "trainer.log_every_n_steps=1",
        "trainer.num_samples=2", "trainer.progress_bar=false", "logger=none", f"hydra.run.dir={run}",
    ]
    result = run_gancolor(args, tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "train/G/cls" in r] == [2]  # 3 batches of 2; G after 2 D steps
    recipe, _ = load_recipe(run / "checkpoints" / "last.pt")
    assert recipe.domain_mode == "multi" and recipe.domains == SELECTED
    ab = recipe.colorize(torch.rand(1, 1, 32, 32) * 2 - 1)
    assert ab.shape == (1, 2, 32, 32) and torch.isfinite(ab).all()
