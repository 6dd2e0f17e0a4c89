"""Turning config nodes into objects, with user mistakes reported as one line.

Also the only place a recipe is rebuilt from a checkpoint's stored config; there,
only gancolor's own classes may be named by `_target_`: a checkpoint from a stranger
must not be able to make Hydra call os.system.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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


def build_recipe(cfg: DictConfig):
    """The recipe with the nets and loss its yaml picked (cfg.generator, ...)."""
    parts = {k: cfg[k] for k in RECIPE_PARTS if k in cfg and cfg[k] is not None}
    return build(cfg.model, "model", **parts)


def recipe_from_stored_config(config: dict, source: str):
    """Rebuild a recipe from the resolved config stored in a checkpoint."""
    for target in _targets(config):
        if not str(target).startswith("gancolor."):
            raise CheckpointError(f"{source}: refusing to build {target!r}: a checkpoint may only name gancolor classes")
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
    import copy

    config = copy.deepcopy(config)
    encoder = (config.get("generator") or {}).get("encoder")
    if isinstance(encoder, dict) and "weights" in encoder:
        encoder["weights"] = False
    if nets is not None and "bins" in nets and "bins" in (config.get("model") or {}):
        config["model"]["bins"] = nets["bins"].tolist()
    return config


def _targets(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and value is not None:
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _targets(value)
