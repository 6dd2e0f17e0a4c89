"""How a run continues from a checkpoint (resume=) or starts from another run's weights
(init_from=).

resume= continues the same experiment: the checkpoint's stored config is the run's
config, and the command line may change only where and how long it runs and how it
logs (RESUME_ALLOWED). Rows that metrics.jsonl gained after that checkpoint are dropped,
because the resumed run logs those steps again. init_from= starts a new run whose nets
begin with another run's weights, and nothing else of it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gancolor.build import build_recipe, config_for_rebuilding
from gancolor.checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    load_ema_weights,
    load_nets,
)
from gancolor.errors import CheckpointError, ConfigError, UserError, fail
from gancolor.options import bool_option

log = logging.getLogger("gancolor")

# What may change on a resume command line: where and how long to run, how to log.
# Anything else would make the continued run a different experiment.
RESUME_ALLOWED = (
    "resume",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.device",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.save_every_n_steps",
    "trainer.keep_last",
    "data.num_workers",
    "data.prefetch_factor",
    "logger",
    "hydra",
)


# The run's group choices gancolor.cli added to a resume's command line (run_choice_overrides).
ADDED_CHOICES: tuple[str, ...] = ()


def checkpoint_to_resume(cfg: DictConfig, quiet: bool = False, warnings=None) -> dict | None:
    """The checkpoint that resume= names, loaded (None: a new run). Fallbacks past broken
    checkpoints are said through `warnings` (anything with .warning), else the log."""
    if cfg.get("resume") and cfg.get("init_from"):
        raise ConfigError("resume and init_from exclude each other: resume continues a run, init_from starts one")
    if not cfg.get("resume"):
        return None
    resume, path = find_resume_checkpoint(cfg.resume, warnings or (None if quiet else log))
    if not quiet:
        log.info("resuming from %s (step %d, epoch %d)", path, resume["global_step"], resume["epoch"] + 1)
    return resume


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_resume_overrides(
    overrides: list[str], cfg: DictConfig | None = None, stored: dict | None = None, choices: dict | None = None
) -> None:
    """Refuse a resume command line that changes more than RESUME_ALLOWED. With the
    composed `cfg` and the run's `stored` config, a key given the value the run already
    has passes: it changes nothing (a command line copied from the run's own). So does
    a group choice the run was composed with (`choices`, stored_choices), whatever the
    keys inside it that may change compose to now: its other keys on the command line
    are checked one by one."""
    stored_cfg = OmegaConf.create(stored) if stored is not None else None

    def unchanged(o: str) -> bool:
        key = override_key(o)
        if cfg is None or stored_cfg is None or o.startswith("~") or "=" not in o:
            return False
        if is_group(key):
            return unchanged_choice(key, o.split("=", 1)[1], cfg, stored_cfg, choices)
        missing = object()
        old = OmegaConf.select(stored_cfg, key, default=missing)
        return old is not missing and old == OmegaConf.select(cfg, key, default=None)

    refused = [o for o in overrides if not allowed(override_key(o)) and not unchanged(o)]
    if refused:
        raise ConfigError(
            f"resume continues a run with its own config; cannot change {', '.join(refused)} "
            f"(allowed: {', '.join(a for a in RESUME_ALLOWED if a not in ('resume', 'hydra'))}, logger.*)"
        )


def allowed(key: str) -> bool:
    return any(key == a or key.startswith(a + ".") for a in RESUME_ALLOWED)


def is_group(key: str) -> bool:
    """data, model, experiment...: a config group of conf/, whose override is a choice."""
    from gancolor.commandline import CONF_DIR

    return "." not in key and key not in ("", "hydra") and (CONF_DIR / key).is_dir()


def unchanged_choice(key: str, value: str, cfg: DictConfig, stored_cfg: DictConfig, choices: dict | None) -> bool:
    if choices is not None and key in choices:
        return str(choices[key]) == value
    # No record of the run's choices (a checkpoint moved out of its run folder): the node
    # the choice composes, less the keys a resume may change anyway.
    def fixed(node):
        if not isinstance(node, DictConfig):
            return node
        plain = OmegaConf.to_container(node)
        return {k: v for k, v in plain.items() if not allowed(f"{key}.{k}")}

    missing = object()
    old = OmegaConf.select(stored_cfg, key, default=missing)
    return old is not missing and fixed(old) == fixed(OmegaConf.select(cfg, key, default=None))


def stored_choices(resume_path: str | os.PathLike | None) -> dict | None:
    """The group choices (data=folder, model=pix2pix, ...) the run that resume= names was
    composed with: hydra.runtime.choices of its .hydra/hydra.yaml as it was before this
    command's job started (Hydra rewrites .hydra/ then; gancolor.cli keeps the old one in
    run_folder.RESUMED). None when that is unknown: a checkpoint outside a run folder."""
    from gancolor import run_folder
    from gancolor.checkpoint import run_dir_of

    if not resume_path:
        return None
    run_dir = run_dir_of(resume_path)
    if run_dir is None:
        return None
    held = run_folder.RESUMED
    text = None
    if held is not None and held.hydra is not None and held.folder.resolve() == Path(run_dir).resolve():
        text = held.hydra.get("hydra.yaml")
    elif (Path(run_dir) / ".hydra" / "hydra.yaml").is_file():
        text = (Path(run_dir) / ".hydra" / "hydra.yaml").read_bytes()
    if text is None:
        return None
    try:
        choices = OmegaConf.select(OmegaConf.create(text.decode()), "hydra.runtime.choices")
    except Exception:  # noqa: BLE001 - an unreadable file is no record: compare the nodes instead
        return None
    return OmegaConf.to_container(choices) if isinstance(choices, DictConfig) else None


def run_choice_overrides(overrides: list[str], resume_path: str | os.PathLike | None) -> list[str]:
    """The group choices of the run that resume= names (stored_choices) that the command
    line does not give, as overrides (`model=cyclegan`): composed with them, the command
    line is checked against the run's own config, not the default pix2pix one, so a
    CycleGAN key (model.pool_size) is a key, and the run's own value of it changes
    nothing. Not the groups a resume may change (logger: the run's stored node stays
    unless logger= is given), not Hydra's own, and not an option conf/ no longer has."""
    from gancolor.commandline import CONF_DIR

    choices = stored_choices(resume_path) or {}
    given = {override_key(o) for o in overrides}
    return [
        f"{group}={choice}"
        for group, choice in choices.items()
        if choice is not None and not group.startswith("hydra") and is_group(group) and not allowed(group)
        and group not in given and (CONF_DIR / group / f"{choice}.yaml").is_file()
    ]


def resume_config(cfg: DictConfig, stored: dict, overrides: list[str], choices: dict | None = None) -> DictConfig:
    """The stored config of the run being resumed, with the allowed overrides applied.
    `choices`: the run's own group choices (stored_choices); by default read from the
    run folder that cfg.resume names."""
    if choices is None:
        choices = stored_choices(cfg.get("resume"))
    check_resume_overrides(overrides, cfg, stored, choices)
    merged = OmegaConf.create(stored)
    for o in overrides:
        key = override_key(o)
        if key.startswith("hydra"):
            continue
        if key == "logger":  # a group choice: take the whole newly composed node
            merged.logger = cfg.logger
        elif is_group(key):
            continue  # the run's own choice (else refused above): its stored node stays as it was
        else:
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def check_resume_continues(cfg: DictConfig, resume: dict, world_size: int) -> None:
    """Refuse, in one line, a resume that cannot continue the run it names: limits
    (trainer.max_steps, trainer.max_epochs) that leave nothing to train, or another
    number of processes than the run had. `cfg` is the run's config with the resume's
    overrides (resume_config)."""
    step, epochs, inside = resume["global_step"], resume["epoch"], resume.get("batch_in_epoch", 0)
    where = f"step {step}, epoch {epochs + 1}" if inside else f"step {step}, {epochs} epochs done"
    max_steps, max_epochs = cfg.trainer.get("max_steps"), cfg.trainer.get("max_epochs")
    if max_steps is not None and int(max_steps) <= step:
        raise ConfigError(
            f"resume: the run is at {where}; trainer.max_steps={max_steps} (the run's own unless given) leaves nothing "
            f"to train: raise it above {step}, or give trainer.max_steps=null to train up to trainer.max_epochs"
        )
    if max_epochs is not None and int(max_epochs) <= epochs:
        raise ConfigError(
            f"resume: the run is at {where}; trainer.max_epochs={max_epochs} leaves nothing to train "
            f"(a resume continues a run: raise it above {epochs})"
        )
    rng = resume.get("rng")
    processes = len(rng) if isinstance(rng, list) else 1  # one RNG state per rank
    if processes != world_size:
        # Each rank trains its own shard of every epoch: another number of processes
        # would change the sample order, the effective batch and the RNG streams.
        again = f"torchrun --nproc_per_node={processes} -m gancolor" if processes > 1 else "python -m gancolor"
        raise ConfigError(
            f"resume: the run was trained by {processes} process(es) and this command starts {world_size}; "
            f"resume it as it ran ({again} resume=...), or start a new run from its weights with init_from="
        )


def refuse_bad_resume(overrides: list[str]) -> None:
    """Exit with one line (and status 2) if `train` would refuse this resume= command
    line; run before Hydra starts the job, which writes .hydra/ and train.log into the
    run folder, so that a refused resume leaves the run as it was."""
    from hydra import compose, initialize_config_dir

    from gancolor.commandline import CONF_DIR

    held = HeldWarnings()
    try:
        plain = [o for o in overrides if not override_key(o).startswith("hydra")]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=plain)
        # A resume that goes on says its fallbacks in its own log; one refused here
        # says them now, since no log exists yet.
        resume = checkpoint_to_resume(cfg, quiet=True, warnings=held)
        if resume is not None:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; the group is not joined yet
            check_resume_continues(resume_config(cfg, resume["config"], overrides), resume, world_size)
    except UserError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank finds it; rank 0 says it (so does fail)
            for line in (line for line in held.lines if line != str(exc)):  # the error says its own
                print(f"gancolor: warning: {line}", file=sys.stderr)
        fail(str(exc), exc.exit_code)


class HeldWarnings:
    """Collects .warning() calls, to be printed only if the command is refused."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str, *args) -> None:
        self.lines.append(message % args if args else message)


def recipe_for_run(cfg: DictConfig, resume: dict | None):
    """The recipe to train, with init_from's weights when the config names a run."""
    if resume is None:
        recipe = build_recipe(cfg)
    else:  # its weights come from the checkpoint, not from pretrained or bins files
        recipe = build_recipe(OmegaConf.create(config_for_rebuilding(OmegaConf.to_container(cfg), resume["nets"])))
    if cfg.get("init_from"):
        init_weights_from(recipe, cfg.init_from, bool_option("init_from_ema", cfg.get("init_from_ema", False)))
    return recipe


def init_weights_from(recipe, path: str, ema: bool = False) -> None:
    """init_from=PATH: another run's weights, nothing else (fresh optimisers, step 0).
    ema: its generators' EMA in place of their raw weights (BasicSR's param_key_g:
    params_ema); the discriminators' weights are the raw ones either way. A run folder
    means its best.pt, else its last.pt, as ckpt= of colorize and evaluate does."""
    from gancolor.inference import run_checkpoint

    path = run_checkpoint(path, lambda line: log.info("%s", line.removeprefix("gancolor: ")), key="init_from")
    ckpt = load_checkpoint(path)
    if ckpt.get("recipe") != recipe.name:
        raise CheckpointError(f"init_from: {path} is a {ckpt.get('recipe')} checkpoint; this run trains {recipe.name}")
    load_nets(recipe, ckpt["nets"], f"init_from: {path}")
    if ema:
        if not ckpt.get("ema"):
            raise CheckpointError(f"init_from_ema: {path} holds no EMA weights (its run had no model.ema_decay); drop init_from_ema")
        load_ema_weights({name: getattr(recipe, name) for name in recipe.generator_names()}, ckpt["ema"], f"init_from: {path}")
    log.info("initialised the nets from %s (step %d of its run%s)", path, ckpt.get("global_step", 0),
             ", the generators' EMA" if ema else "")


def drop_metrics_after(path: Path, step: int) -> None:
    """A run killed after its last checkpoint logged steps it will now redo: drop those
    rows so metrics.jsonl reads as one uninterrupted run."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines(keepends=True) if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)
