"""Options that have no effect in the composed config, named in one warning.

`model=cic loss.gan_mode=lsgan` is accepted and silently ignored (CIC's GAN term is off
while loss.lambda_gan is 0). NO_EFFECT lists such cases as data: an option (a key, or a
config group and every key under it), the condition on the composed config under which
nothing reads it, and why. Only options the user set on the command line are reported:
a default that goes unused is nobody's mistake.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

from gancolor.config_check import override_key


class NoEffect(NamedTuple):
    option: str                   # a key (loss.gan_mode) or a group (discriminator: all of it)
    when: Callable[[Any], bool]   # composed config -> True when nothing reads `option`
    why: str


def _get(cfg, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)


def _cic_without_gan(cfg) -> bool:
    return _get(cfg, "model.name") == "cic" and float(_get(cfg, "loss.lambda_gan", 0) or 0) == 0


def _not_torchrun(cfg) -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1


def _no_validation(cfg) -> bool:
    return _get(cfg, "trainer.val_every_n_epochs") == 0


NO_EFFECT = (
    NoEffect("loss.gan_mode", _cic_without_gan, "model=cic has no GAN term while loss.lambda_gan is 0"),
    NoEffect("discriminator", _cic_without_gan, "model=cic builds no discriminator while loss.lambda_gan is 0"),
    NoEffect("model.d_lr_mult", _cic_without_gan, "model=cic builds no discriminator while loss.lambda_gan is 0"),
    NoEffect("model.d_beta1", _cic_without_gan, "model=cic builds no discriminator while loss.lambda_gan is 0"),
    NoEffect("model.d_beta2", _cic_without_gan, "model=cic builds no discriminator while loss.lambda_gan is 0"),
    NoEffect("loss.pretrain_loss", lambda c: _get(c, "trainer.pretrain_epochs") == 0, "trainer.pretrain_epochs is 0"),
    NoEffect("trainer.lr_decay_epochs", lambda c: _get(c, "trainer.lr_policy") != "linear", "it is trainer.lr_policy=linear's"),
    NoEffect("trainer.lr_decay_iters", lambda c: _get(c, "trainer.lr_policy") != "step", "it is trainer.lr_policy=step's"),
    NoEffect("trainer.lr_step_gamma", lambda c: _get(c, "trainer.lr_policy") != "step", "it is trainer.lr_policy=step's"),
    NoEffect("trainer.compile_mode", lambda c: _get(c, "trainer.compile") is False, "trainer.compile is false"),
    NoEffect("trainer.cudnn_benchmark", lambda c: _get(c, "trainer.device") == "cpu", "trainer.device is cpu"),
    NoEffect("trainer.monitor", _no_validation, "validation is off (trainer.val_every_n_epochs=0)"),
    NoEffect("trainer.monitor_mode", _no_validation, "validation is off (trainer.val_every_n_epochs=0)"),
    NoEffect("trainer.num_samples", _no_validation, "validation is off (trainer.val_every_n_epochs=0)"),
    NoEffect("trainer.sync_batchnorm", _not_torchrun, "one process: it applies under torchrun"),
    NoEffect("trainer.find_unused_parameters", _not_torchrun, "one process: it applies under torchrun"),
    NoEffect("trainer.check_ranks_agree", _not_torchrun, "one process: it applies under torchrun"),
)


def ineffective_options(cfg, overrides: list[str]) -> list[str]:
    """`option (why)` for each option the overrides set that has no effect in `cfg`."""
    keys = [override_key(o) for o in overrides]
    found = []
    for rule in NO_EFFECT:
        named = [k for k in keys if k == rule.option or k.startswith(rule.option + ".")]
        if named and rule.when(cfg):
            found += [f"{key} ({rule.why})" for key in dict.fromkeys(named)]
    return found


def no_adversarial_epoch(cfg, overrides: list[str]) -> str | None:
    """Pretraining that the command made as long as the run: every epoch trains G on the
    pixel loss and the GAN never starts. Meant for a pixel-loss baseline, a slip otherwise."""
    if not {override_key(o) for o in overrides} & {"trainer.pretrain_epochs", "trainer.max_epochs"}:
        return None
    pretrain, total = _get(cfg, "trainer.pretrain_epochs", 0), _get(cfg, "trainer.max_epochs")
    if not (isinstance(pretrain, int) and isinstance(total, int)) or pretrain == 0 or pretrain < total:
        return None
    return (f"trainer.pretrain_epochs={pretrain} covers all {total} epochs (trainer.max_epochs): G trains on the "
            "pixel loss alone and no adversarial epoch runs")


def ddp_without_torchrun(cfg) -> str | None:
    """trainer=ddp started as `python -m gancolor`: it trains, in one process, which is
    rarely what the command meant."""
    if _get(cfg, "trainer.strategy") != "ddp" or not _not_torchrun(cfg):
        return None
    return "trainer=ddp without torchrun: one process; start it with torchrun --nproc_per_node=N -m gancolor ..."


def warning(cfg_and_overrides: list[tuple[Any, list[str]]]) -> str | None:
    """A line naming every ineffective option over the jobs given, one for a run that
    never reaches its adversarial phase, and one for trainer=ddp in one process (None: none)."""
    found = list(dict.fromkeys(item for cfg, overrides in cfg_and_overrides for item in ineffective_options(cfg, overrides)))
    phases = list(dict.fromkeys(filter(None, (no_adversarial_epoch(cfg, overrides) for cfg, overrides in cfg_and_overrides))))
    phases += list(dict.fromkeys(filter(None, (ddp_without_torchrun(cfg) for cfg, _ in cfg_and_overrides))))
    lines = (["gancolor: warning: no effect in this config: " + "; ".join(found)] if found else []) + [
        f"gancolor: warning: {line}" for line in phases
    ]
    return "\n".join(lines) or None
