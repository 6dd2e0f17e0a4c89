"""conf/sweep/*.yaml: ready for `wandb sweep` + `wandb agent`.

Each file must parse as a W&B sweep; the command the agent would build from it
(wandb's own code turns parameters into `key=value` arguments) must compose as
Hydra overrides of conf/config.yaml and build; and the metric it optimises must be
one the trainer really logs, under that exact name.
"""

import pytest
import yaml
from omegaconf import OmegaConf

from gancolor.build import build, build_recipe
from gancolor.loggers import Logger
from helpers import CONF_DIR, compose

SWEEP_DIR = CONF_DIR / "sweep"

# The sweeps the project promises, with the parameters users know them by.
PROMISED = {
    "pix2pix": {"loss.lambda_L1", "model.lr", "loss.gan_mode"},
    "cyclegan": {"loss.lambda_cycle"},
    "dynamic_unet": {"generator.encoder.name", "trainer.pretrain_epochs"},
}
# Config files other sweeps depend on; a sweep is composed once they exist.
NEEDS = {
    "pix2pix": ["model/pix2pix.yaml"],
    "cyclegan": ["model/cyclegan.yaml"],
    "dynamic_unet": ["generator/dynamic_unet.yaml"],
}
METHODS = {"grid", "random", "bayes"}
DISTRIBUTIONS = {
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal",
    "log_normal", "q_log_normal", "beta", "q_beta",
}
SWEEP_ENV = {"WANDB_SWEEP_ID": "sweep42", "WANDB_RUN_ID": "run7"}


def load(name: str) -> dict:
    with (SWEEP_DIR / f"{name}.yaml").open() as f:
        return yaml.safe_load(f)  # as `wandb sweep` reads it


def samples(spec: dict) -> list:
    """Values a parameter can take: all of a list, both ends of a range."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def assignments(parameters: dict) -> list[dict]:
    """Every value of every parameter at least once (the others at their first value)."""
    base = {name: samples(spec)[0] for name, spec in parameters.items()}
    out = [base]
    for name, spec in parameters.items():
        out += [{**base, name: value} for value in samples(spec)[1:]]
    return out


def agent_command(sweep: dict, assignment: dict) -> list[str]:
    """The argv `wandb agent` runs for one suggested assignment, built by wandb's code
    when it is importable (it is internal), else by its documented `name=value` rule."""
    args = {name: {"value": value} for name, value in assignment.items()}
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

        macros = create_sweep_command_args({"args": args})
    except ImportError:
        macros = {"args_no_hyphens": [f"{k}={v['value']}" for k, v in args.items()]}
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep.get("program", "")])
    argv: list[str] = []
    for item in sweep["command"]:
        item = str(item)
        if item.startswith("${") and item.endswith("}"):
            argv += macros[item[2:-1]]
        else:
            argv.append(item)
    return argv


@pytest.fixture(scope="module")
def trainer_keys(tmp_path_factory) -> set[str]:
    """Every key the trainer logs in a tiny pix2pix run (losses, rates, validation)."""
    keys: set[str] = set()

    class Recorder(Logger):
        def log_metrics(self, metrics, step):
            keys.update(metrics)

        def log_image(self, key, path, step, caption=""):
            keys.add(key)

    tmp = tmp_path_factory.mktemp("sweep_keys")
    cfg = compose(
        "data.image_size=32", "data.batch_size=3", "data.repeats=1", f"data.cache_dir={tmp / 'photos'}",
        "generator.ngf=8", "discriminator.ndf=8", "trainer.max_epochs=1", "trainer.pretrain_epochs=0",
        "trainer.log_every_n_steps=1", "trainer.num_samples=1", "trainer.progress_bar=false",
        "trainer.device=cpu", "logger=none",
    )
    trainer, data, recipe = build(cfg.trainer, "trainer"), build(cfg.data, "data"), build_recipe(cfg)
    data.setup()
    trainer.fit(recipe, data, tmp / "run", Recorder(), OmegaConf.to_container(cfg, resolve=True))
    return keys


def test_the_promised_sweeps_exist():
    assert {p.stem for p in SWEEP_DIR.glob("*.yaml")} >= set(PROMISED)


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))
def test_sweep_file_is_a_valid_wandb_sweep(name):
    sweep = load(name)
    assert sweep["method"] in METHODS
    assert sweep["metric"]["goal"] in ("maximize", "minimize") and sweep["metric"]["name"]
    assert sweep["parameters"], "a sweep with nothing to sweep"
    for param, spec in sweep["parameters"].items():
        kinds = {"value", "values"} & set(spec) or ({"range"} if {"min", "max"} <= set(spec) else set())
        assert len(kinds) == 1, f"{param}: give exactly one of value, values, or min+max"
        assert spec.get("distribution", "categorical") in DISTRIBUTIONS, param
        # The agent writes values with str(): None would arrive as the string "None".
        assert all(v is not None and not isinstance(v, (dict, list)) for v in samples(spec)), param
    assert set(PROMISED.get(name, set())) <= set(sweep["parameters"])
    argv = agent_command(sweep, assignments(sweep["parameters"])[0])
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "gancolor"]
    assert sweep["command"][-1] == "${args_no_hyphens}"


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))
def test_sweep_metric_is_logged_by_the_trainer(name, trainer_keys):
    metric = load(name)["metric"]["name"]
    assert metric in trainer_keys, f"{name}: metric {metric!r} is never logged; the trainer logs {sorted(trainer_keys)}"
    assert metric.startswith("val/"), "a sweep should rank runs on held-out images"


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))
def test_sweep_parameters_are_hydra_overrides_that_build(name, monkeypatch):
    missing = [n for n in NEEDS.get(name, []) if not (CONF_DIR / n).is_file()]
    assert not missing, f"the {name} sweep needs {missing}"
    for key, value in SWEEP_ENV.items():
        monkeypatch.setenv(key, value)
    sweep = load(name)
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    selections = [f"{k}={v['value']}" for k, v in sweep["parameters"].items() if k in groups and "value" in v]
    compose(*selections)
    assignments_ = assignments(sweep["parameters"])
    for assignment in assignments_:
        overrides = agent_command(sweep, assignment)[4:]
        cfg = compose(*overrides, return_hydra_config=True)
        assert cfg.hydra.run.dir == f"runs/sweep/{SWEEP_ENV['WANDB_SWEEP_ID']}/{SWEEP_ENV['WANDB_RUN_ID']}"
        for key, value in assignment.items():
            if key in groups:
                assert cfg.hydra.runtime.choices[key] == value, (name, key)
            else:
                assert OmegaConf.select(cfg, key) == value, (name, key, OmegaConf.select(cfg, key))
        # Build the recipe with its nets shrunk, so a value the code refuses fails here.
        tiny = ["data.image_size=32"]
        tiny += [f"{net}.{width}=8" for net, width in (("generator", "ngf"), ("discriminator", "ndf")) if OmegaConf.select(cfg, f"{net}.{width}") is not None]
        cfg = compose(*tiny, *overrides)
        build(cfg.trainer, "trainer")
        if assignment is assignments_[0] or any(assignment[k] != assignments_[0][k] for k in assignment if not k.startswith("trainer.")):
            build_recipe(cfg)  # only when something the recipe is made of changed
