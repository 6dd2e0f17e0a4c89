"""`python -m gancolor [overrides]`: the training command's entry point.

The overrides are checked (gancolor.commandline) before Hydra runs the job, a resumed run
is pointed at its own folder, and torchrun's ranks join their group before Hydra names
the run folder; then Hydra runs gancolor.train.train.
"""

from __future__ import annotations

import os
import sys

from gancolor.commandline import CONF_DIR, check_overrides, expand_home


def train_main() -> None:
    sys.argv[1:] = [expand_home(a) for a in sys.argv[1:]]
    args = sys.argv[1:]
    # Hydra's own flags (--multirun, --cfg, --help, ...) take other paths through Hydra;
    # plain runs get their overrides checked here first.
    if not any(a.startswith("-") for a in args):
        check_overrides(args)

    resume = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if resume and resume[-1] and not any(a.startswith("-") for a in args):
        from gancolor.resume import refuse_bad_resume

        refuse_bad_resume(args)  # before Hydra writes into the run folder
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
