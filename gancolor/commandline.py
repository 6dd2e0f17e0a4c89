"""Key=value command lines, composed by Hydra: how every gancolor command reads its args.

`python -m gancolor` (training) hands its overrides to @hydra.main, which reports a bad
override as a multi-line message and a wrong value only once the job has started; users
deserve one line, before any work. So `check_overrides` composes them first (the same
composition Hydra is about to do) and checks what Hydra does not (gancolor.config_check:
unknown keys with the nearest one, value types, required values); `check_sweep` does
the same for every job of a multirun. The other commands (colorize, evaluate) compose
their own config with `compose_command`. Either way a mistake ends as
`gancolor: error: ...` with exit code 2.

Hydra is imported only when a command line is composed, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

from gancolor.errors import fail, one_line

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

_HYDRA_FULL_ERROR_HINT = " Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def hydra_error_message(exc: BaseException) -> str:
    """A composition error on one line, without Hydra's hint about its stack traces."""
    return one_line(exc).replace(_HYDRA_FULL_ERROR_HINT, "")


def expand_home(arg: str) -> str:
    """`key=~/photos` -> `key=/home/me/photos`: Hydra's override grammar refuses a bare
    `~` in a value, and users type it (a leading `~key` is Hydra's delete: kept)."""
    if "=" not in arg or arg.startswith(("-", "~")):
        return arg
    key, value = arg.split("=", 1)
    parts = [os.path.expanduser(p) if p == "~" or p.startswith("~/") else p for p in value.split(",")]
    return f"{key}={','.join(parts)}"


def check_overrides(overrides: list[str], resuming: bool = False):
    """Compose conf/config.yaml with `overrides` as the job will and check what Hydra
    does not (gancolor.config_check); exit with one line for the first mistake.
    `resuming`: a resume= command line, whose required values (data.root=...) are the
    run's stored ones. Returns the composed config (without Hydra's own node)."""
    cfg, problem = config_problem(overrides, resuming)
    if problem:
        fail(problem)
    return cfg


def check_sweep(overrides: list[str]) -> list:
    """check_overrides for every job of `python -m gancolor -m OVERRIDES`, before the
    first starts; a mistake names the job. Returns (composed config, overrides) per job."""
    from gancolor.config_check import missing_launcher_plugin, sweep_jobs

    problem = missing_launcher_plugin(overrides)  # the launcher runs every job alike
    if problem:
        fail(problem)
    try:
        jobs = sweep_jobs(overrides, CONF_DIR)
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors, all kinds
        fail(f"bad config: {hydra_error_message(exc)} (see: python -m gancolor --help)")
    if jobs is None:  # a sweeper plugin's sweep: the jobs check themselves when they start
        return []
    varying = [i for i in range(len(overrides)) if len({job[i] for job in jobs}) > 1] if jobs else []
    configs = []
    for num, job in enumerate(jobs):
        cfg, problem = config_problem(job)
        if problem:
            fail(f"{problem} (multirun job {num}: {' '.join(job[i] for i in varying) or ' '.join(job)})")
        configs.append((cfg, job))
    return configs


def config_problem(overrides: list[str], resuming: bool = False):
    """(composed config, None), or (config or None, what is wrong with the overrides).
    `resuming`: as check_overrides."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gancolor import config_check as check

    problem = check.missing_launcher_plugin(overrides)
    if problem:
        return None, problem
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    choices = check.group_choices(plain, CONF_DIR)
    errors = (HydraException, OmegaConfBaseException, ValueError)
    try:
        defaults = _composed(tuple(choices))
    except errors as exc:
        return None, f"bad config: {hydra_error_message(exc)} (see: python -m gancolor --help)"
    try:
        cfg = _composed(tuple(plain))
    except errors as exc:
        message = hydra_error_message(exc)
        unknown = re.search(r"Could not override '([^']+)'", message)
        if unknown:
            return None, check.unknown_key_message(unknown.group(1), defaults, CONF_DIR)
        return None, f"bad config: {message} (see: python -m gancolor --help)"
    try:
        problem = (
            check.added_key_problem(plain, defaults, CONF_DIR)
            or check.input_kind_problem(cfg)
            or (None if resuming else check.missing_values(cfg, choices))
            or check.value_type_problem(plain, cfg, defaults)
            or check.value_range_problem(cfg)
            or check.missing_data_folder(cfg, overrides)
        )
    except errors as exc:  # an interpolation that cannot resolve
        return None, f"bad config: {hydra_error_message(exc)} (see: python -m gancolor --help)"
    return cfg, problem


@functools.lru_cache(maxsize=32)
def _composed(overrides: tuple[str, ...]):
    """conf/config.yaml composed with `overrides` (a multirun's jobs share their defaults)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def compose_command(
    config_name: str, argv: list[str], *, path_keys: frozenset[str], list_keys: frozenset[str] = frozenset(), usage: str
):
    """Compose conf/<config_name>.yaml with `argv` (key=value overrides), as a DictConfig.

    The compose API, not @hydra.main: nothing is written (no outputs/ folder, no
    .hydra/) and no logging is reconfigured. Two conveniences over plain Hydra, both
    for file names: values of `path_keys` are quoted before parsing, so names with
    spaces, commas, brackets or non-ASCII letters need no quoting of their own (Hydra's
    grammar rejects them unquoted); and a key of `list_keys` given several times
    (ckpt=a.pt ckpt=b.pt) becomes one list, as ckpt=[a.pt,b.pt] would. Any mistake
    exits with one line and status 2.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if any(arg in ("-h", "--help") for arg in argv):
        try:
            print(usage.strip(), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has all it wanted
            sys.stderr.close()
        sys.exit(0)
    overrides: list[str] = []
    gathered: dict[str, list[str]] = defaultdict(list)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            fail(f"expected key=value, got {arg!r} (see --help)")
        if key in list_keys and value.startswith("["):
            overrides.append(f"{key}={value}")  # Hydra's own list syntax, as given
        elif key in list_keys:
            gathered[key].append(value)
        else:
            overrides.append(f"{key}={hydra_quoted(value) if key in path_keys else value}")
    for key, values in gathered.items():
        quoted = [hydra_quoted(v) for v in values]
        overrides.append(f"{key}={quoted[0]}" if len(quoted) == 1 else f"{key}=[{','.join(quoted)}]")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        message = hydra_error_message(exc)
        unknown = re.search(r"Could not override '([^']+)'", message)
        if unknown:
            message = f"unknown argument {unknown.group(1)!r}"
        fail(f"bad argument: {message} (see --help)")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        fail(f"missing argument: {', '.join(f'{k}=...' for k in missing)} (see --help)")
    return cfg


def hydra_quoted(value: str) -> str:
    """`value` as a Hydra quoted string, unless it already is one or is null.

    Hydra unescapes only backslashes that precede a quote or end the string, so only
    those are doubled.
    """
    if value == "null" or value[:1] in ("'", '"'):
        return value
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"
