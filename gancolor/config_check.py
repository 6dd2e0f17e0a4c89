"""What a training command line asks for, checked against the composed config before
any job starts (and before torch is imported): keys that do not exist, values of the
wrong type, required values left out, data folders that are not there, launchers whose
plugin is not installed, and a multirun's sweeps expanded into the jobs Hydra will run.

Each check returns a message for the user, or None; gancolor.commandline turns the
first message into the one line a mistake gives. Hydra and OmegaConf are imported
inside the functions, like in gancolor.commandline.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from typing import Any

# Launchers (conf/hydra/launcher/<name>.yaml) that need a Hydra plugin gancolor does not
# install by default: the plugin's module and the extra that installs it.
LAUNCHER_EXTRAS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}


def override_key(override: str) -> str:
    """`+trainer.x=1` -> `trainer.x`."""
    return override.split("=", 1)[0].lstrip("+~")


def group_choices(overrides: list[str], conf_dir: Path) -> list[str]:
    """The overrides that pick an option of a config group (`data=folder`), not a value."""
    return [o for o in overrides if "=" in o and not o.startswith("~") and (conf_dir / override_key(o)).is_dir()]


def missing_launcher_plugin(overrides: list[str]) -> str | None:
    for o in overrides:
        if override_key(o) == "hydra/launcher" and "=" in o:
            name = o.split("=", 1)[1]
            module, extra = LAUNCHER_EXTRAS.get(name, (None, None))
            if module and not importable(module):
                return f'hydra/launcher={name} needs its Hydra plugin: pip install -e ".[{extra}]"'
    return None


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False


def has_key(cfg, key: str) -> bool:
    """Whether `cfg` has `key` (dotted), even with a missing (???) value."""
    from omegaconf import DictConfig, OmegaConf

    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None, throw_on_missing=False) if parent_key else cfg
    return isinstance(parent, DictConfig) and leaf in parent.keys()  # `in` alone is False for ???


def unknown_key_message(key: str, defaults, conf_dir: Path) -> str:
    """What to say about `key`, which the composed config (`defaults`) does not have."""
    return key_hint(key, defaults, conf_dir) or f"unknown key {key} (python -m gancolor --cfg job shows every key)"


def key_hint(key: str, defaults, conf_dir: Path, cutoff: float = 0.6) -> str | None:
    """Which option of its group has `key`, or the nearest key that exists (difflib's
    similarity >= `cutoff`; None: none)."""
    from omegaconf import DictConfig, OmegaConf

    group, _, rest = key.partition(".")
    if rest and (conf_dir / group).is_dir():
        having = options_with_key(conf_dir / group, rest, defaults.get(group))
        if having:
            others = f" (or {', '.join(having[1:])})" if len(having) > 1 else ""
            return f"{key} needs {group}={having[0]}{others}"
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(defaults, parent_key) if parent_key else defaults
    prefix = f"{parent_key}." if parent_key else ""
    if isinstance(parent, DictConfig):
        near = difflib.get_close_matches(leaf, [str(k) for k in parent.keys()], n=1, cutoff=cutoff)
        if near:
            return f"unknown key {key}: did you mean {prefix}{near[0]}?"
    elsewhere = [k for k in leaf_keys(defaults) if k.rpartition(".")[2] == leaf]
    if elsewhere:
        return f"unknown key {key}: did you mean {' or '.join(elsewhere[:3])}?"
    return None


def options_with_key(group_dir: Path, key: str, current) -> list[str]:
    """The options of a config group whose yaml sets `key`: first those that require it
    (`???`: they are built around it), each kind the most like the current choice (by
    the keys they share) first."""
    from omegaconf import DictConfig, OmegaConf

    current_keys = set(current.keys()) if isinstance(current, DictConfig) else set()
    found = []
    for path in sorted(group_dir.glob("*.yaml")):
        node = OmegaConf.load(path)
        if not has_key(node, key):
            continue
        keys = set(node.keys())
        likeness = len(keys & current_keys) / max(len(keys | current_keys), 1)
        found.append((not OmegaConf.is_missing(*_parent_and_leaf(node, key)), -likeness, path.stem))
    return [name for *_, name in sorted(found)]


def _parent_and_leaf(cfg, key: str):
    from omegaconf import OmegaConf

    parent_key, _, leaf = key.rpartition(".")
    return (OmegaConf.select(cfg, parent_key) if parent_key else cfg), leaf


def leaf_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    for k in node.keys():
        child = node._get_node(k)
        full = f"{prefix}{k}"
        keys += leaf_keys(child, full + ".") if isinstance(child, DictConfig) else [full]
    return keys


def added_key_problem(overrides: list[str], defaults, conf_dir: Path) -> str | None:
    """A `+key=...` that adds what looks like a misspelt key, or a key another option of
    its group has: Hydra's own hint suggests the `+`, and the constructor then refuses it.
    A key that is nothing like an existing one may be a constructor's argument the yaml
    does not list, and passes."""
    for o in overrides:
        if not o.startswith("+") or "=" not in o:
            continue
        key = override_key(o)
        if has_key(defaults, key):
            continue
        hint = key_hint(key, defaults, conf_dir, cutoff=0.8)
        if hint:
            return hint
    return None


# Keys that take "auto" besides the number some configs give them.
AUTO_KEYS = frozenset({"data.num_workers"})


# Numeric keys whose yaml default is null ("not set"), so that the default cannot say
# their type: what a value must be when one is given.
NULLABLE_NUMBERS = {
    "data.max_images": 0, "data.resize_to": 0, "data.repeats": 0, "data.val_fraction": 0.0,
    "discriminator.repeat_num": 0, "generator.n_blocks": 0, "generator.num_downs": 0,
    "model.prior_max_images": 0, "model.ema_decay": 0.0, "trainer.max_steps": 0, "trainer.lr_decay_epochs": 0,
}  # fmt: skip


def type_problem(key: str, value: Any, default: Any) -> str | None:
    """`value` against the type of the yaml's `default`: numbers and booleans only
    (a string or null default says nothing about what else it accepts, except for the
    keys of NULLABLE_NUMBERS)."""
    if default is None:
        default = NULLABLE_NUMBERS.get(key)
    if value is None or default is None or isinstance(default, str):
        return None
    if key in AUTO_KEYS:
        whole = isinstance(value, int) and not isinstance(value, bool)
        return None if value == "auto" or whole else f"{key} must be an integer or auto, got {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"
    if isinstance(default, int):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else f"{key} must be an integer, got {value!r}"
    if isinstance(default, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number else f"{key} must be a number, got {value!r}"
    return None


def value_type_problem(overrides: list[str], cfg, defaults) -> str | None:
    """The first override whose value has another type than the yaml default of its key."""
    from omegaconf import OmegaConf

    for o in overrides:
        if o.startswith("~") or "=" not in o:
            continue
        key = override_key(o)
        try:
            value = OmegaConf.select(cfg, key, default=None)
            default = OmegaConf.select(defaults, key, default=None)
        except Exception:  # noqa: BLE001 - an interpolation that resolves only in the job
            continue
        problem = type_problem(key, value, default)
        if problem:
            return problem
    return None


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _adam_beta(v: float) -> bool:
    return 0 <= v < 1


# Ranges of the optimiser's and the losses' numbers, which the recipes' constructors and
# torch.optim would otherwise refuse only once the job has written its run folder (or, a
# negative loss weight, never: it trains away from the photo). key (or prefix*) -> check.
VALUE_RANGES = {
    "model.lr": (_positive, "> 0"), "model.g_lr": (_positive, "> 0"), "model.d_lr": (_positive, "> 0"),
    "model.d_lr_mult": (_positive, "> 0"), "model.weight_decay": (_non_negative, ">= 0"),
    "model.beta1": (_adam_beta, "in [0, 1)"), "model.beta2": (_adam_beta, "in [0, 1)"),
    "model.d_beta1": (_adam_beta, "in [0, 1)"), "model.d_beta2": (_adam_beta, "in [0, 1)"),
    "loss.lambda_*": (_non_negative, ">= 0"),
}  # fmt: skip


def value_range_problem(cfg) -> str | None:
    """The first optimiser or loss number out of its range (VALUE_RANGES)."""
    from fnmatch import fnmatchcase

    from omegaconf import OmegaConf

    for key in leaf_keys(cfg):
        rule = next((r for pattern, r in VALUE_RANGES.items() if fnmatchcase(key, pattern)), None)
        value = OmegaConf.select(cfg, key, default=None) if rule else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not rule[0](value):
            return f"{key} must be {rule[1]}, got {value}"
    return None


def missing_values(cfg, choices: list[str]) -> str | None:
    """Required values (`???`) the command left out, and the option that requires them."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return None
    picked = {override_key(c): c.split("=", 1)[1] for c in choices}
    owners = sorted({f"{k.split('.')[0]}={picked[k.split('.')[0]]}" for k in missing if k.split(".")[0] in picked})
    by = f" (required by {', '.join(owners)})" if owners else ""
    return f"missing {', '.join(f'{k}=...' for k in missing)}{by}"


# The recipe that takes model.target (ab: gray inputs; lab, rgb: NIR ones); the others
# colourise gray inputs. The data module that gives NIR inputs (gray: all the others).
TARGET_RECIPES = ("gancolor.models.pix2pix.Pix2Pix",)
NIR_DATA = ("gancolor.data.NIRDataModule", "gancolor.data.nir.NIRDataModule")
NIR_TARGETS = ("lab", "rgb")


def input_kind_message(model: str, target: str | None, given: str) -> str | None:
    """A recipe (`model`, its model.target or None) and data that give `given` inputs
    (gray or nir) that disagree, in one line; None when they agree."""
    wanted = "nir" if target in NIR_TARGETS else "gray"
    if wanted == given:
        return None
    if given == "nir" and target is not None:
        return (f"data=nir gives near-infrared inputs, but model.target={target} colourises gray ones: "
                "set model.target=lab (or rgb), as experiment=nir_pix2pix does")
    if given == "nir":
        return (f"data=nir gives near-infrared inputs, but this model={model} colourises gray ones: "
                "NIR needs model=pix2pix model.target=lab (or rgb), as experiment=nir_pix2pix sets")
    return (f"model.target={target} predicts the whole colour image from a near-infrared input, "
            "which data=nir gives (as experiment=nir_pix2pix sets); this data module gives gray ones")


def input_kind_problem(cfg) -> str | None:
    """input_kind_message from the composed config, before anything is built (or an
    interpolation resolved): a recipe's constructor would otherwise fail first on what
    the mismatch leaves behind (experiment=nir_pix2pix's model.target handed to CycleGAN,
    StarGAN's ${data.domains} that data=nir lacks, the discriminator's channels for
    model.target=ab) and say less."""
    from omegaconf import OmegaConf

    def literal(key: str) -> str | None:
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        except Exception:  # noqa: BLE001 - not a plain value: the other checks say what is wrong
            return None
        return value if isinstance(value, str) else None

    recipe = literal("model._target_") or ""
    target = literal("model.target") if recipe in TARGET_RECIPES else None
    if recipe in TARGET_RECIPES and target not in ("ab", *NIR_TARGETS):
        return None  # the recipe names the valid targets itself
    given = "nir" if literal("data._target_") in NIR_DATA else "gray"
    return input_kind_message(literal("model.name") or recipe.rsplit(".", 1)[-1].lower(), target, given)


# The data configs' folder keys (conf/data/*.yaml).
DATA_FOLDER_KEYS = ("root", "nir_root", "rgb_root")


def expand_folder(value: str | os.PathLike[str]) -> Path:
    """A folder option as a path: ~ expanded, relative to the working directory."""
    return Path(os.path.expanduser(os.fspath(value))).absolute()


def folder_problem(key: str, value: str | os.PathLike[str]) -> str | None:
    """`key` names a folder (expand_folder) that is not there."""
    folder = expand_folder(value)
    if not folder.exists():
        return f"{key}: folder not found: {folder}"
    if not folder.is_dir():
        return f"{key}: not a folder: {folder}"
    return None


def missing_data_folder(cfg, overrides: list[str]) -> str | None:
    """A data folder the config names that is not on this machine: said in a second,
    not after torch has loaded. Skipped for a launcher that runs the jobs elsewhere."""
    from omegaconf import OmegaConf

    if any(override_key(o) == "hydra/launcher" and not o.endswith("=basic") for o in overrides):
        return None
    data = cfg.get("data")
    for key in DATA_FOLDER_KEYS:
        if data is None or key not in data or OmegaConf.is_missing(data, key):
            continue
        if key == "root" and data.get("nir_root") is not None:
            continue  # data=nir given both layouts: its loader says "not both", which is the mistake
        value = data[key]
        if isinstance(value, str) and value:
            problem = folder_problem(f"data.{key}", value)
            if problem:
                return problem
    return None


def sweep_jobs(overrides: list[str], conf_dir: Path) -> list[list[str]] | None:
    """The override lists of the jobs `python -m gancolor -m OVERRIDES` runs, as Hydra's
    basic sweeper makes them (the cartesian product of the sweeps, in command-line
    order); None when a sweep cannot be expanded here (an interval: a sweeper plugin's)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            choices.append([override.input_line])
            continue
        key = override.get_key_element()
        if isinstance(override.value(), Glob):
            options = sorted(p.stem for p in (conf_dir / override.key_or_group).glob("*.yaml"))
            values = override.value().filter(options)
        else:
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - interval sweeps: only a sweeper plugin expands them
                return None
        choices.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]
