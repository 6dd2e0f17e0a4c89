"""Typed checks for option values, shared by every command and by the trainer.

A value reaches these from a composed config, so its type is whatever Hydra parsed:
`quality=95` is an int, `quality='95'` a string, `quality=true` a bool. Each checker
returns the value in its proper type or raises a ConfigError that names the key, says
what was expected and shows what was given.
"""

from __future__ import annotations

from gancolor.errors import ConfigError


def int_option(name: str, value, minimum: int, allow_none: bool = False) -> int | None:
    """`value` as an int >= `minimum` (None passes through when `allow_none`).

    Accepted: ints, whole floats (5.0) and digit strings ('5', '-2'). A bool is refused
    although Python counts it as an int: `max_epochs=true` is a mistake, not 1.
    """
    if value is None and allow_none:
        return None
    number = _whole_number(value)
    if number is None:
        raise ConfigError(f"{name} must be an integer{' or null' if allow_none else ''}, got {value!r}")
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def int_or_auto_option(name: str, value, minimum: int) -> int | None:
    """`value` as an int >= `minimum`, or None for `auto` (the command picks, knowing the
    device); null is refused, so that there is one way to say "you choose"."""
    if isinstance(value, str) and value.strip() == "auto":
        return None
    if _whole_number(value) is None:
        raise ConfigError(f"{name} must be an integer or auto, got {value!r}")
    return int_option(name, value, minimum)


def _whole_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if number == value or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return number
    return None  # 2.5: int() would silently drop the fraction


def bool_option(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def temperature_option(value) -> float | None:
    """CIC's annealed-mean temperature: a number >= 0 (0 takes the mode), or None."""
    if value is None:
        return None
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"temperature must be a number (0 for the mode), got {value!r}") from None
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    return temperature


TTA_MODES = ("none", "flip")


def tta_option(value) -> str:
    """Test-time augmentation: none, or flip (the net also sees the photo mirrored
    left-right, and the two predictions are averaged: twice the net's time)."""
    mode = str(value).lower() if isinstance(value, str) else value
    if mode not in TTA_MODES:
        raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)}, got {value!r}")
    return mode
