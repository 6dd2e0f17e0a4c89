"""Every option of every config group composes, resolves and builds, with tiny sizes (as
lightning-hydra-template's test_configs does). Groups and options are found by globbing
conf/, so a new yaml is covered without being listed here."""

from __future__ import annotations

from collections import defaultdict

import pytest
from omegaconf import OmegaConf
from torch import nn

from gancolor.build import build, build_recipe
from helpers import CONF_DIR, compose, shrink, write_attribute_file, write_nir_pairs

# conf/hydra holds Hydra's own launcher plugins (an optional install); conf/sweep holds
# W&B sweep files, not config options (tests/test_sweeps.py checks those).
NOT_GROUPS = {"hydra", "sweep"}
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_GROUPS)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


OPTIONS = [(group, option) for group in GROUPS for option in options(group)]
NET_AND_LOSS_OPTIONS = [(g, o) for g, o in OPTIONS if g in ("generator", "discriminator", "loss")]
RUN_OPTIONS = [(g, o) for g, o in OPTIONS if g in ("model", "experiment")]
# How each group is built below; a new group fails test_every_group_is_built until it is.
BUILT_BY = {
    "generator": "test_nets_and_losses_build_in_the_recipes_that_pick_them",
    "discriminator": "test_nets_and_losses_build_in_the_recipes_that_pick_them",
    "loss": "test_nets_and_losses_build_in_the_recipes_that_pick_them",
    "data": "test_data_modules_build_and_give_a_batch",
    "trainer": "test_trainers_build_and_accept_the_default_recipe",
    "logger": "test_loggers_build_and_log",
    "model": "test_recipes_and_experiments_build_their_recipe_trainer_and_data",
    "experiment": "test_recipes_and_experiments_build_their_recipe_trainer_and_data",
}


def ids(pairs) -> list[str]:
    return [f"{group}={option}" for group, option in pairs]


@pytest.fixture(scope="module")
def recipes_picking() -> dict[tuple[str, str], list[str]]:
    """(group, option) -> the recipes whose yaml picks that option (model=cic picks generator=cic, ...)."""
    picks = defaultdict(list)
    for model in options("model"):
        for group, option in compose(f"model={model}", return_hydra_config=True).hydra.runtime.choices.items():
            picks[(group, option)].append(model)
    return picks


def test_every_group_is_built():
    assert set(GROUPS) == set(BUILT_BY), "say in BUILT_BY (and a test) how a new config group is built"


@pytest.mark.parametrize("group, option", OPTIONS, ids=ids(OPTIONS))
def test_every_option_composes_and_resolves(group, option):
    cfg = compose(f"{group}={option}")
    # What a run folder's config.yaml and every checkpoint store: all interpolations resolved.
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("group, option", NET_AND_LOSS_OPTIONS, ids=ids(NET_AND_LOSS_OPTIONS))
def test_nets_and_losses_build_in_the_recipes_that_pick_them(group, option, recipes_picking):
    # A net or loss is built by a recipe, which supplies its channels (and, for CIC and
    # StarGAN, its classes and domains); one that no recipe picks must fit the default.
    models = recipes_picking.get((group, option)) or [compose(return_hydra_config=True).hydra.runtime.choices.model]
    built = []
    for model in models:
        cfg = shrink(compose(f"model={model}", f"{group}={option}"))
        recipe = build_recipe(cfg)
        assert isinstance(recipe, nn.Module)
        if group != "loss":
            net_class = cfg[group]._target_.rsplit(".", 1)[1]
            built += [type(m).__name__ == net_class for m in recipe.modules()]
    assert group == "loss" or any(built), f"no recipe of {models} built a {group}={option} net"


@pytest.mark.parametrize("option", options("data"))
def test_data_modules_build_and_give_a_batch(option, small_photo_folder, cache, tmp_path, photos):
    cfg = shrink(compose(f"data={option}"))
    # Those that read a folder read the photos the test wrote; the sample photos are cached.
    if "nir_root" in cfg.data:  # NIR/RGB pairs: synthetic NIR images of the photos next to them
        cfg.data.root = str(write_nir_pairs(tmp_path / "nir", photos))
    elif "root" in cfg.data.keys():  # `in` alone misses a ??? value
        cfg.data.root = str(small_photo_folder)
    if "cache_dir" in cfg.data:
        cfg.data.cache_dir = str(cache / "sample")
    if "selected_attrs" in cfg.data:  # every photo gets alternating attributes
        photos = sorted(p.relative_to(small_photo_folder).as_posix() for p in small_photo_folder.rglob("*.png"))
        rows = {name: [1 if (i + k) % 2 else -1 for k in range(len(cfg.data.selected_attrs))] for i, name in enumerate(photos)}
        cfg.data.attr_file = str(write_attribute_file(tmp_path / "attrs.txt", rows, list(cfg.data.selected_attrs)))
    data = build(cfg.data, "data")
    data.setup()
    assert data.train_size > 0 and data.val_size > 0
    batch = data.device_batch(next(iter(data.train_loader())), "cpu")
    assert batch and all(len(value) == cfg.data.batch_size for value in batch.values())


@pytest.mark.parametrize("option", options("trainer"))
def test_trainers_build_and_accept_the_default_recipe(option):
    cfg = shrink(compose(f"trainer={option}"))
    trainer = build(cfg.trainer, "trainer")
    trainer.check_phases(build_recipe(cfg))


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_build_and_log(option, tmp_path):
    from gancolor.train import build_logger

    cfg = compose(f"logger={option}")
    logger = build_logger(cfg, tmp_path, OmegaConf.to_container(cfg, resolve=True))  # offline: conftest
    try:
        logger.log_metrics({"val/psnr": 20.0}, step=1)
    finally:
        logger.finish()
    assert (tmp_path / "metrics.jsonl").is_file()


@pytest.mark.parametrize("group, option", RUN_OPTIONS, ids=ids(RUN_OPTIONS))
def test_recipes_and_experiments_build_their_recipe_trainer_and_data(group, option):
    cfg = shrink(compose(f"{group}={option}"))
    recipe, trainer = build_recipe(cfg), build(cfg.trainer, "trainer")
    if cfg.data.get("root", "") is None and "selected_attrs" in cfg.data:
        cfg.data.root = "photos"  # data=attributes has no default folder; it is not read here
    build(cfg.data, "data")  # not set up: some read a folder of the user's
    trainer.check_phases(recipe)  # every phase of its schedule is one the recipe has
    for path in trainer.freeze_epochs:
        recipe.get_submodule(path)  # fails, naming the path, if the recipe has no such part
