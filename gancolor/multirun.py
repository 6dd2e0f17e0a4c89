"""The table at the end of a Hydra multirun: one row per job, its overrides and final
validation metrics, as summary.md and summary.csv in the multirun folder.

It reads only what each job left on disk (.hydra/overrides.yaml, .hydra/hydra.yaml,
metrics.jsonl), so it works whatever launcher ran the jobs, and
`python -m gancolor.multirun FOLDER` rebuilds the table of an earlier multirun.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gancolor.config_check import override_key as _key
from gancolor.errors import fail

log = logging.getLogger("gancolor.multirun")

# Shown first when present, in this order; any other val/ metric follows.
METRIC_ORDER = ("val/psnr", "val/ssim", "val/mae", "val/mse", "val/colorfulness_ratio")

# Written into a job's folder when the job raised: the folder alone cannot tell.
FAILED_MARKER = "job_failed.txt"


class FailedJob(NamedTuple):
    num: int | str
    message: str
    exit_code: int
    sweep_dir: str


# The jobs of this process's multirun that failed, for the command's last line and exit code.
FAILED_JOBS: list[FailedJob] = []


def mark_failed(job_dir: Path, num, sweep_dir, message: str, exit_code: int) -> None:
    """Record a failed job: in its folder (the summary reads it) and for this process."""
    message = " ".join(message.split())
    if job_dir.is_dir():  # a job that failed before starting may have removed its folder
        (job_dir / FAILED_MARKER).write_text(message + "\n")
    FAILED_JOBS.append(FailedJob(num, message, exit_code, str(sweep_dir or "")))


class MultirunSummary(Callback):
    """Registered under hydra.callbacks in conf/config.yaml.

    The table is rewritten after every job, so a multirun that is interrupted, or
    that Hydra aborts after a failed job (it then skips on_multirun_end), still
    leaves one covering the jobs that ran.
    """

    def __init__(self, monitor: str = "val/psnr", mode: str = "max") -> None:
        self.monitor, self.mode = str(monitor), str(mode)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        hydra_mode = OmegaConf.select(config, "hydra.mode")
        if getattr(hydra_mode, "name", str(hydra_mode)) != "MULTIRUN":
            return
        try:
            status = getattr(getattr(job_return, "status", None), "name", "")
            if status == "FAILED":
                error = getattr(job_return, "_return_value", None)
                job_dir = Path(str(config.hydra.runtime.output_dir))
                if job_dir.is_dir():  # a job that failed before starting may have removed its folder
                    (job_dir / FAILED_MARKER).write_text(" ".join(f"{type(error).__name__}: {error}".split()) + "\n")
            write_summary(Path(str(config.hydra.sweep.dir)), self.monitor, self.mode)
        except Exception as exc:  # never let the table break the job it reports on
            log.warning("could not update the multirun summary: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            paths = write_summary(sweep_dir, self.monitor, self.mode)
        except Exception as exc:  # a summary must never turn a finished multirun into a failure
            log.warning("could not write the multirun summary in %s: %s", sweep_dir, exc)
            return
        if paths:
            log.info("multirun summary:\n%s", paths[0].read_text().rstrip())
            log.info("multirun summary written: %s and %s", paths[0], paths[1])


def write_summary(sweep_dir: str | Path, monitor: str = "val/psnr", mode: str = "max") -> tuple[Path, Path] | None:
    """Write summary.md and summary.csv for the jobs under `sweep_dir`; None if it holds none."""
    sweep_dir = Path(sweep_dir)
    jobs = [read_job(folder, sweep_dir, monitor, mode) for folder in find_job_folders(sweep_dir)]
    if not jobs:
        return None
    jobs.sort(key=lambda job: (job["num"] is None, job["num"] if job["num"] is not None else 0, job["folder"]))

    swept = varying_keys([job["overrides"] for job in jobs])
    metrics = [m for m in METRIC_ORDER if any(m in job["final"] for job in jobs)]
    metrics += sorted({k for job in jobs for k in job["final"] if k.startswith("val/")} - set(metrics))
    best_key = f"best {monitor}"

    header = ["job", *swept, "status", "step", "epoch", *metrics, best_key, "best step", "folder", "overrides"]
    rows = []
    for job in jobs:
        final = job["final"]
        rows.append({
            "job": job["num"] if job["num"] is not None else "",
            **{key: job["overrides"].get(key, "") for key in swept},
            "status": job["status"],
            "step": final.get("step", ""),
            "epoch": final.get("epoch", ""),
            **{m: final.get(m, "") for m in metrics},
            best_key: job["best"].get(monitor, ""),
            "best step": job["best"].get("step", ""),
            "folder": job["folder"],
            "overrides": " ".join(job["override_list"]),
        })

    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    _replace(csv_path, table.getvalue())
    _replace(md_path, markdown(sweep_dir, jobs, rows, header, swept, monitor, mode, best_key))
    return md_path, csv_path


def _replace(path: Path, text: str) -> None:
    """Whole or not at all: jobs of a parallel launcher may finish at the same time."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def markdown(sweep_dir, jobs, rows, header, swept, monitor, mode, best_key) -> str:
    common = [o for o in jobs[0]["override_list"] if _key(o) not in swept and all(o in j["override_list"] for j in jobs)]
    lines = [f"# Multirun summary: {sweep_dir}", ""]
    if common:
        lines += ["Common overrides: " + " ".join(f"`{o}`" for o in common), ""]
    scored = [(r, float(r[best_key])) for r in rows if _is_number(r[best_key])]
    twins = identical_jobs(rows, [c for c in header if c.startswith("val/")])
    if scored and len(twins) == 1 and len(twins[0]) == len(rows) > 1:
        lines += [
            f"No best {monitor}: all {len(rows)} jobs ended with identical metrics, so nothing swept made a "
            "difference yet (a job that ends within trainer.pretrain_epochs trains the generator alone, "
            "and the GAN's options are never used: give each job more epochs or steps)",
            "",
        ]
    elif scored:
        pick = max if mode == "max" else min
        row, value = pick(scored, key=lambda item: item[1])
        setting = " ".join(f"{k}={row[k]}" for k in swept if row[k] != "") or row["folder"]
        lines += [f"Best {monitor} ({mode}): {_fmt(value)}, job {row['job']} ({setting})", ""]
    for group in twins:
        if len(group) < len(rows):
            lines += [f"Indistinguishable (identical metrics): jobs {', '.join(str(r['job']) for r in group)}", ""]
    columns = [c for c in header if c != "overrides"]  # the swept keys already say it
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def identical_jobs(rows: list[dict], metric_columns: list[str]) -> list[list[dict]]:
    """Groups of two or more jobs that ended with exactly the same validation metrics:
    whatever their settings, they trained the same thing (or did not train what differs)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        values = tuple(row[c] for c in metric_columns)
        if row["status"] == "ok" and any(_is_number(v) for v in values):
            groups.setdefault(values, []).append(row)
    return [group for group in groups.values() if len(group) > 1]


def find_job_folders(sweep_dir: Path) -> list[Path]:
    """Every job folder under the multirun folder, however hydra.sweep.subdir nests them."""
    return sorted({p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")})


def read_job(folder: Path, sweep_dir: Path, monitor: str, mode: str) -> dict:
    override_list = [as_typed(str(o)) for o in (OmegaConf.load(folder / ".hydra" / "overrides.yaml") or [])]
    num = None
    hydra_yaml = folder / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        num = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num", default=None)
    val_rows = []
    metrics_path = folder / "metrics.jsonl"
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a job killed mid-write leaves half a line
                continue
            if any(k.startswith("val/") for k in row):
                val_rows.append(row)
    final = val_rows[-1] if val_rows else {}
    scored = [r for r in val_rows if _is_number(r.get(monitor))]
    best = {}
    if scored:
        pick = max if mode == "max" else min
        best_row = pick(scored, key=lambda r: float(r[monitor]))
        best = {monitor: best_row[monitor], "step": best_row.get("step", "")}
    if (folder / FAILED_MARKER).is_file():
        status = "failed"
    elif final:
        status = "ok"
    elif metrics_path.is_file():
        status = "no validation"
    else:
        status = "no metrics"
    return {
        "num": int(num) if num is not None else None,
        "folder": folder.relative_to(sweep_dir).as_posix() if folder != sweep_dir else ".",
        "override_list": override_list,
        "overrides": {_key(o): o.split("=", 1)[1] if "=" in o else "" for o in override_list},
        "final": final,
        "best": best,
        "status": status,
    }


def as_typed(override: str) -> str:
    """An override as the user types it: Hydra's sweeper writes a job's booleans the
    Python way (trainer.progress_bar=False), which the command line would not parse."""
    key, sep, value = override.partition("=")
    return f"{key}={value.lower()}" if sep and value in ("True", "False") else override


def varying_keys(overrides: list[dict[str, str]]) -> list[str]:
    """The override keys whose values differ between jobs (what the multirun swept),
    in command-line order; with a single job, all of its keys."""
    keys = list(dict.fromkeys(k for job in overrides for k in job))
    if len(overrides) < 2:
        return keys
    return [k for k in keys if len({job.get(k) for job in overrides}) > 1]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gancolor.multirun MULTIRUN_FOLDER", file=sys.stderr)
        sys.exit(2)
    paths = write_summary(args[0])
    if paths is None:
        fail(f"no Hydra job folders under {args[0]}", 1)
    print(paths[0].read_text(), end="")


if __name__ == "__main__":
    main()
