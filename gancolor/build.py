"""Turning config nodes into objects, with user mistakes reported as one line.

Also the only place a recipe is rebuilt from a checkpoint's stored config, and the one
check (`check_config_targets`) that every config read from a file passes before
anything of it is built: there, only gancolor's own classes may be named by
`_target_`, so a checkpoint from a stranger cannot make Hydra call os.system or
shutil.copyfile.
"""

from __future__ import annotations

import ast
import copy
import functools
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gancolor.errors import CheckpointError, ConfigError, UserError, one_line

RECIPE_PARTS = ("generator", "discriminator", "loss")


def build(node: DictConfig, where: str, **kwargs: Any):
    """hydra.utils.instantiate, surfacing a UserError raised inside as itself and any
    other failure to construct as a ConfigError naming the config group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{where}: {one_line(exc)}") from None


# Keys of the model node that are the trainer's business, not the recipe constructor's.
TRAINER_MODEL_KEYS = ("ema_decay", "ema_warmup")


def build_recipe(cfg: DictConfig):
    """The recipe with the nets and loss its yaml picked (cfg.generator, ...), and
    `recipe.ema_decay` from model.ema_decay (None: no generator EMA) and
    `recipe.ema_warmup` from model.ema_warmup (absent, as in older runs' configs: off)."""
    from gancolor.ema import ema_decay_option
    from gancolor.options import bool_option

    ema_decay = ema_decay_option(cfg.model.get("ema_decay"))
    ema_warmup = bool_option("model.ema_warmup", cfg.model.get("ema_warmup") or False)
    if any(k in cfg.model for k in TRAINER_MODEL_KEYS):
        cfg = copy.deepcopy(cfg)  # the caller's config keeps them; interpolations still resolve
        with open_dict(cfg.model):
            for key in TRAINER_MODEL_KEYS:
                cfg.model.pop(key, None)
    parts = {k: cfg[k] for k in RECIPE_PARTS if k in cfg and cfg[k] is not None}
    recipe = build(cfg.model, "model", **parts)
    recipe.ema_decay, recipe.ema_warmup = ema_decay, ema_warmup
    return recipe


def recipe_from_stored_config(config: dict, source: str):
    """Rebuild a recipe from the resolved config stored in a checkpoint."""
    check_config_targets(config, source)
    cfg = OmegaConf.create({k: config[k] for k in ("model", *RECIPE_PARTS) if k in config})
    if "model" not in cfg:
        raise CheckpointError(f"{source}: the checkpoint's config has no model section")
    return build_recipe(cfg)


def config_for_rebuilding(config: dict, nets: dict | None = None) -> dict:
    """A stored config made independent of files that only training needed.

    The checkpoint's weights replace a pretrained encoder's (so its file need not exist
    on this machine, and nothing should warn that it is missing), and CIC's ab bins are
    in the weights too (so a bins file need not exist either).
    """

    config = copy.deepcopy(config)
    encoder = (config.get("generator") or {}).get("encoder")
    if isinstance(encoder, dict) and "weights" in encoder:
        encoder["weights"] = False
    if nets is not None and "bins" in nets and "bins" in (config.get("model") or {}):
        config["model"]["bins"] = nets["bins"].tolist()
    return config


# -- configs from files ------------------------------------------------------------------

_PACKAGE_ROOT = Path(__file__).resolve().parent


def check_config_targets(config: Any, source: str) -> None:
    """Refuse a config read from a file (a checkpoint's stored config, a run folder's
    config.yaml) unless every `_target_` in it, at any depth and in lists too, names a
    class that gancolor's own source defines. Raises CheckpointError naming `source`.

    Nothing is imported or resolved: the name is looked up in gancolor's source files
    (a class statement, or an alias of one, in the module the dotted path names). A
    check by prefix alone would pass gancolor.train.shutil.copyfile (train.py imports
    shutil) or gancolor.build.instantiate (Hydra's, imported here).

    Stored configs are saved resolved, so an interpolation in one can only be crafted:
    it is refused too (oc.decode could otherwise turn a plain string into a node with a
    `_target_` of its own after this check).
    """
    for where, key, value in _walk(config, ""):
        if key == "_target_":
            if value is None:
                continue  # logger=none stores `_target_: null`: nothing to build
            problem = _target_problem(value)
            if problem:
                raise CheckpointError(
                    f"{source}: refusing to build {value!r} (at {where}): {problem}; "
                    "a stored config may only name gancolor's own classes"
                )
        elif isinstance(value, str) and "${" in value:
            raise CheckpointError(f"{source}: refusing the interpolation {value[:80]!r} at {where}: stored configs are saved resolved")


def _walk(node: Any, where: str):
    """(where, key, value) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, key, value
            yield from _walk(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            path = f"{where}[{i}]"
            yield path, None, value
            yield from _walk(value, path)


def _target_problem(target: Any) -> str | None:
    """Why `target` may not be built, or None when it names a gancolor class."""
    if not isinstance(target, str):
        return "not a dotted name"
    parts = target.split(".")
    if parts[0] != "gancolor" or len(parts) < 3:
        return "not a gancolor class"
    if not all(p.isidentifier() and not p.startswith("_") for p in parts):
        return "not a plain dotted name"
    module = _module_file(parts[1:-1])
    if module is None:
        return f"no module {'.'.join(parts[:-1])} in gancolor"
    if not _defines_class(module, parts[-1]):
        return f"{'.'.join(parts[:-1])} defines no class {parts[-1]}"
    return None


def _module_file(parts: list[str]) -> Path | None:
    """gancolor/a/b.py or gancolor/a/b/__init__.py for ["a", "b"], if there is one."""
    base = _PACKAGE_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file() and _PACKAGE_ROOT in candidate.resolve().parents:
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _defines_class(module: Path, name: str, depth: int = 0) -> bool:
    """Whether `module`'s top level binds `name` to a class of gancolor's: a class
    statement, `name = OtherName` of one, or an import of one from another gancolor module."""
    if depth > 8:  # an alias chain this long is not one gancolor has
        return False
    for node in _top_level(_parse(module)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets) and node.value.id != name:
                return _defines_class(module, node.value.id, depth + 1)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _imported_module(module, node)
                    return source is not None and _defines_class(source, alias.name, depth + 1)
    return False


@functools.lru_cache(maxsize=None)
def _parse(module: Path) -> ast.Module:
    return ast.parse(module.read_text(encoding="utf-8"))


def _top_level(tree: ast.Module):
    """Module-level statements, including those under if/try blocks."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            pending.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)


def _imported_module(module: Path, node: ast.ImportFrom) -> Path | None:
    """The gancolor source file a `from X import ...` statement in `module` reads."""
    if node.level:  # relative: from .x import y
        package = module.parent.relative_to(_PACKAGE_ROOT).parts
        package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        parts = [*package, *((node.module or "").split(".") if node.module else [])]
    else:
        names = (node.module or "").split(".")
        if names[0] != "gancolor":
            return None
        parts = names[1:]
    return _module_file(list(parts))
