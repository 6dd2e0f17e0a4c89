"""`python -m gancolor [overrides]`: the training command's entry point.

Before Hydra starts a job (and before torch is imported), the command line is checked
(gancolor.commandline: every job of a multirun too), a resume is checked against what
it may change, options that would do nothing are named in one warning
(gancolor.noops), and the run folder is claimed: a folder that holds a run is refused
without overwrite=true and locked while the run trains (gancolor.run_folder). Hydra
writes .hydra/ and train.log into the folder as a job starts, so a command refused
after that would already have touched an earlier run. Then torchrun's ranks join
their group before Hydra names the run folder, and Hydra runs gancolor.train.train.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gancolor.commandline import CONF_DIR, check_overrides, check_sweep, expand_home
from gancolor.errors import UserError, fail

MULTIRUN_FLAGS = {"-m", "--multirun"}


def train_main() -> None:
    sys.argv[1:] = [expand_home(a) for a in sys.argv[1:]]
    args = sys.argv[1:]
    flags = {a for a in args if a.startswith("-")}
    multirun = bool(flags & MULTIRUN_FLAGS)
    if multirun and is_torchrun():
        # Every rank would run the whole sweep as its own: each takes the sweep folder's
        # lock, or names its own dated folder and summary. Refused before anything is written.
        fail("multirun (-m) under torchrun is not supported: run the sweep without torchrun, or one torchrun per setting")
    lock = None
    # Hydra's other flags (--cfg, --help, --info, ...) take Hydra's own paths, unchecked.
    if flags <= MULTIRUN_FLAGS:
        overrides = [a for a in args if not a.startswith("-")]
        try:
            lock = prepare_multirun(overrides) if multirun else prepare_run(overrides)
        except UserError as exc:
            fail(str(exc), exc.exit_code)

    try:
        run_hydra(multirun)
    finally:
        if lock is not None:
            lock.release()
    if multirun:
        report_failed_jobs()


def run_hydra(multirun: bool) -> None:
    from gancolor import distributed

    if distributed.launched_by_torchrun():
        # Join the group before Hydra names the run folder, so all ranks agree on it.
        distributed.init_process_group()
        os.environ["GANCOLOR_RUN_TIME"] = distributed.shared_run_time()

    import hydra

    from gancolor.train import train, train_job

    task = train_job if multirun else train
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()
        distributed.barrier()  # every rank done with the group before any rank leaves it
    finally:
        distributed.shutdown()


def prepare_run(overrides: list[str]):
    """Check one run's command line and claim its folder: the held RunLock, or None
    when the folder is a new dated one that Hydra names itself."""
    from gancolor import noops
    from gancolor.run_folder import RunLock, refuse_occupied

    resume = last_value(overrides, "resume")
    if resume:
        from gancolor import resume as resuming  # torch: only when resuming

        # The run's own group choices (model=cyclegan, ...), for the checks and for Hydra's
        # job alike: both compose the run's config, where its own keys exist. After the
        # user's overrides, which train.log's "resumed with:" line shows without them.
        own = resuming.run_choice_overrides(overrides, resume)
        overrides = [*overrides, *own]
        sys.argv.extend(own)
        resuming.ADDED_CHOICES = tuple(own)
    cfg = check_overrides(overrides, resuming=bool(resume))
    if resume:
        # Before Hydra rewrites the run's .hydra/ and train.log: overrides that would change the
        # experiment, limits that leave nothing to train, another number of processes.
        resuming.refuse_bad_resume(overrides)
    else:
        say(noops.warning([(cfg, overrides)]))
    run_dir = planned_dir(overrides, "hydra.run.dir", cfg)
    if resume and run_dir is None:
        from gancolor.checkpoint import run_dir_of

        run_dir = run_dir_of(resume)
        if run_dir is None:
            return None  # a checkpoint outside any run folder: the run gets a new one
        sys.argv.append(f"hydra.run.dir={run_dir}")  # a resumed run continues in its own folder
    elif run_dir is None:
        return None
    if resume and same_folder(run_dir, resume):
        from gancolor import run_folder

        run_folder.RESUMED = run_folder.ResumedFolder(run_dir)
    else:
        refuse_occupied(run_dir, bool(cfg.get("overwrite")))
    return RunLock(run_dir).acquire() if is_rank_zero() else None


def prepare_multirun(overrides: list[str]):
    """Check every job of a multirun, then claim an explicit hydra.sweep.dir."""
    from gancolor import noops
    from gancolor.run_folder import RunLock, refuse_occupied

    jobs = check_sweep(overrides)
    say(noops.warning(jobs))
    sweep_dir = planned_dir(overrides, "hydra.sweep.dir", jobs[0][0] if jobs else None)
    if sweep_dir is None:
        return None
    refuse_occupied(sweep_dir, any(bool(cfg.get("overwrite")) for cfg, _ in jobs), sweep=True)
    return RunLock(sweep_dir).acquire()


def report_failed_jobs() -> None:
    """A multirun whose jobs failed ends with one line and the failing jobs' exit code."""
    from gancolor.multirun import FAILED_JOBS

    if FAILED_JOBS:
        code = 2 if all(job.exit_code == 2 for job in FAILED_JOBS) else 1
        where = f"; see {FAILED_JOBS[0].sweep_dir}/summary.md" if FAILED_JOBS[0].sweep_dir else ""
        fail(f"{len(FAILED_JOBS)} multirun job(s) failed: " + "; ".join(f"job {j.num}: {j.message}" for j in FAILED_JOBS) + where, code)


def last_value(overrides: list[str], key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key and "=" in o]
    return values[-1] if values and values[-1] not in ("", "null") else None


def planned_dir(overrides: list[str], key: str, cfg) -> Path | None:
    """The folder `key=...` names on the command line, its interpolations resolved now
    (and the override replaced by the result, so Hydra uses exactly that folder); None
    when the command leaves it to Hydra's dated default or it resolves only in a job."""
    value = last_value(overrides, key)
    if value is None:
        return None
    if "${" not in value:
        return Path(value)
    if cfg is None or is_torchrun():  # ranks could resolve ${now:...} a second apart
        return None
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    setup_globals()  # Hydra's ${now:...}
    try:
        node = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg)), {"_planned": value})
        folder = str(node._planned)
    except Exception:  # noqa: BLE001 - ${hydra:...} and the like resolve only inside the job
        return None
    sys.argv[1:] = [a for a in sys.argv[1:] if a.split("=", 1)[0].lstrip("+") != key] + [f"{key}={folder}"]
    return Path(folder)


def same_folder(run_dir: Path, resume: str) -> bool:
    from gancolor.checkpoint import run_dir_of

    own = run_dir_of(resume)
    return own is not None and Path(own).resolve() == Path(run_dir).resolve()


def is_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_rank_zero() -> bool:
    """Rank 0 alone locks the run folder under torchrun (all ranks share it)."""
    return os.environ.get("RANK", "0") == "0"


def say(line: str | None) -> None:
    if line and is_rank_zero():
        print(line, file=sys.stderr, flush=True)
