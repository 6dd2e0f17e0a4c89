"""Command-line plumbing shared by gancolor's entry points.

Hydra reports a bad override as a multi-line message and a wrong value only once the
job has started; users deserve one line, before any work. So `train_main` composes the
overrides itself first (the same composition Hydra is about to do) and turns any
failure into `gancolor: error: ...` with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def fail(message: str, code: int = 2) -> None:
    """Print one line for the user and exit non-zero."""
    print(f"gancolor: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_overrides(overrides: list[str]) -> None:
    """Compose conf/config.yaml with `overrides`; exit with one line if Hydra refuses."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gancolor.build import one_line

    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=plain)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        message = one_line(exc).replace(" Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
        fail(f"bad config: {message} (see: python -m gancolor --help)")


def expand_home(arg: str) -> str:
    """`key=~/photos` -> `key=/home/me/photos`: Hydra's override grammar refuses a bare
    `~` in a value, and users type it (a leading `~key` is Hydra's delete: kept)."""
    if "=" not in arg or arg.startswith(("-", "~")):
        return arg
    key, value = arg.split("=", 1)
    parts = [os.path.expanduser(p) if p == "~" or p.startswith("~/") else p for p in value.split(",")]
    return f"{key}={','.join(parts)}"


def train_main() -> None:
    sys.argv[1:] = [expand_home(a) for a in sys.argv[1:]]
    args = sys.argv[1:]
    # Hydra's own flags (--multirun, --cfg, --help, ...) take other paths through Hydra;
    # plain runs get their overrides checked here first.
    if not any(a.startswith("-") for a in args):
        check_overrides(args)

    resume = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if resume and resume[-1] and not any(a.startswith("hydra.run.dir=") for a in args):
        # A resumed run continues in its own folder, not in a new dated one.
        from gancolor.checkpoint import run_dir_of

        run_dir = run_dir_of(resume[-1])
        if run_dir is not None:
            sys.argv.append(f"hydra.run.dir={run_dir}")

    from gancolor import distributed

    if distributed.launched_by_torchrun():
        # Join the group before Hydra names the run folder, so all ranks agree on it.
        distributed.init_process_group()
        os.environ["GANCOLOR_RUN_TIME"] = distributed.shared_run_time()

    import hydra

    from gancolor.train import train

    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(train)()
        distributed.barrier()  # every rank done with the group before any rank leaves it
    finally:
        distributed.shutdown()
