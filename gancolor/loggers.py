"""Where numbers and images go: metrics.jsonl (always), W&B (logger=wandb), nowhere else.

The trainer talks to one `Logger`; `build_logger` puts metrics.jsonl in front of
whatever `logger=` chose, so a run folder is complete even without W&B.
"""

from __future__ import annotations

import configparser
import json
import logging
import math
import netrc
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from gancolor.errors import ConfigError, UserError

log = logging.getLogger("gancolor.loggers")

# The file in a run folder that names its W&B run, for resuming into the same run.
WANDB_ID_FILE = "wandb_id.txt"
TABLE_IMAGES = ("gray", "generated", "truth")


class Logger:
    """Interface, and the `logger=none` choice: every call does nothing."""

    run_id: str | None = None  # the tracker's id of this run, stored in checkpoints for resume

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_image(self, key: str, path: Path, step: int, caption: str = "") -> None: ...

    def log_validation_table(self, rows: list[dict], step: int) -> None:
        """Per-image validation results: each row holds the images 'gray', 'generated'
        and 'truth' (HWC uint8 arrays, or CHW float tensors in [0, 1]) and numbers."""

    def log_summary(self, values: dict[str, Any]) -> None:
        """Values that describe the whole run (best score, final evaluation)."""

    def log_checkpoint(self, path: str | Path, aliases: Sequence[str] = ("latest",), metadata: dict | None = None) -> None:
        """A checkpoint file, for trackers that version them."""

    def finish(self) -> None: ...


NullLogger = Logger


class JsonlLogger(Logger):
    """One JSON object per line: {"step": ..., "train/G/loss": ..., ...}; flushed per line
    so a killed run keeps everything it logged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = self.path.open("a", encoding="utf-8")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def finish(self) -> None:
        self.file.close()


def _jsonable(value: Any):
    value = float(value) if not isinstance(value, (int, str)) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


class TrackerError(UserError):
    """The experiment tracker could not start (no key for online mode, a bad entity...)."""


# -- W&B ------------------------------------------------------------------------------

MODES = ("online", "offline", "disabled")
# Older spellings wandb still accepts in WANDB_MODE.
MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def resolve_wandb_mode(mode: str | None = None) -> tuple[str, str]:
    """(mode, why): WANDB_MODE first (the documented rule: it always wins), then
    logger.mode, then online exactly when this machine has a W&B API key."""
    if os.environ.get("WANDB_MODE"):
        chosen, why = os.environ["WANDB_MODE"], "WANDB_MODE"
    elif os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        chosen, why = "disabled", "WANDB_DISABLED"
    elif mode:
        chosen, why = str(mode), "logger.mode"
    elif wandb_api_key_configured():
        return "online", "a W&B API key is configured"
    else:
        return "offline", "no W&B API key; `wandb login` to log online"
    normalized = MODE_ALIASES.get(chosen.strip().lower(), chosen.strip().lower())
    if normalized not in MODES:
        raise ConfigError(f"{why} must be one of {', '.join(MODES)}, got {chosen!r}")
    return normalized, f"{why}={chosen}"


def wandb_api_key_configured() -> bool:
    """True when `wandb login` or WANDB_API_KEY gave this machine a key; never asks,
    never touches the network. Looks where wandb itself looks: the environment, then
    the netrc file (NETRC, ~/.netrc, ~/_netrc) under the server's host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = _wandb_hosts()
    for path in _netrc_paths():
        try:
            entries = netrc.netrc(str(path))
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            continue
        if any((entries.authenticators(host) or (None, None, None))[2] for host in hosts):
            return True
    return False


# wandb's default server has moved between releases; a key stored under any of
# these names is a key for "the W&B cloud".
_CLOUD_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com", "forge.coreweave.com")


def _wandb_hosts() -> list[str]:
    base_url = os.environ.get("WANDB_BASE_URL") or _settings_base_url()
    if not base_url:
        return list(_CLOUD_HOSTS)
    parts = urlsplit(base_url if "//" in base_url else f"https://{base_url}")
    hosts = [h for h in (parts.netloc, parts.hostname) if h]
    if any(h in _CLOUD_HOSTS or h.endswith("." + _CLOUD_HOSTS[-1]) for h in hosts):
        hosts += _CLOUD_HOSTS
    return hosts


def _settings_base_url() -> str | None:
    """base_url from `wandb login --host=...`, kept in wandb's global settings file."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(config_dir, "settings"))
        return parser.get("default", "base_url", fallback=None)
    except configparser.Error:
        return None


def _netrc_paths() -> list[Path]:
    if os.environ.get("NETRC"):
        return [Path(os.environ["NETRC"]).expanduser()]
    home = Path(os.path.expanduser("~"))
    return [home / ".netrc", home / "_netrc"]


def stored_wandb_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder was logged under, or None: read from wandb_id.txt,
    else from the newest wandb/(offline-)run-<date>-<id> folder wandb itself made."""
    run_dir = Path(run_dir)
    try:
        stored = (run_dir / WANDB_ID_FILE).read_text().strip()
    except OSError:
        stored = ""
    if stored:
        return stored
    # wandb names them (offline-)run-<date>_<time>-<id>, plus -N when a run is resumed.
    found = []
    for folder in (run_dir / "wandb").glob("*run-*"):
        match = re.fullmatch(r"(?:offline-)?run-(\d{8}_\d{6})-(.+?)(?:-\d+)?", folder.name)
        if match and folder.is_dir() and not folder.is_symlink():
            found.append((match.group(1), match.group(2)))
    return max(found)[1] if found else None


def to_uint8_image(image) -> Any:
    """HWC uint8 numpy array from an HWC uint8 array, or from a float image in [0, 1]:
    a torch tensor is CHW (as the trainer holds images), a numpy array CHW when its
    first axis is 1 or 3 channels and its last is not."""
    import numpy as np

    channels_first = False
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
        channels_first = image.ndim == 3
    array = np.asarray(image)
    if array.ndim == 3 and (channels_first or (array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3))):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


class WandbLogger(Logger):
    """Weights & Biases. Online when an API key is configured, else offline inside the
    run folder with one line on how to sync; WANDB_MODE always wins.

    Everything wandb writes for the run stays in <run_dir>/wandb (offline artifact
    copies included), and <run_dir>/wandb_id.txt names the run. A resumed training
    passes that id back as `run_id` (the trainer stores it in checkpoints) and
    continues the same W&B run; without run_id a run is always a new W&B run, even in
    a reused folder (W&B would drop the steps of a fresh run logged into an old one).
    The summary keeps the best value of `monitor` seen so far, with the other
    validation metrics of that validation, under best/...
    """

    def __init__(
        self,
        run_dir: str | Path,
        run_config: dict | None = None,
        project: str = "gancolor",
        entity: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        name: str | None = None,
        mode: str | None = None,
        run_id: str | None = None,
        job_type: str | None = "train",
        notes: str | None = None,
        monitor: str = "val/psnr",
        monitor_mode: str = "max",
        log_checkpoints: bool = False,
    ) -> None:
        import wandb  # imported here: logger=none should not pay for it

        if monitor_mode not in ("max", "min"):
            raise ConfigError(f"logger.monitor_mode must be max or min, got {monitor_mode!r}")
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.monitor, self.monitor_mode = str(monitor), monitor_mode
        self.log_checkpoints = bool(log_checkpoints)
        self.mode, why = resolve_wandb_mode(mode)
        in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))

        self._restore_env: dict[str, str | None] = {}
        if self.mode == "offline" and not os.environ.get("WANDB_DATA_DIR"):
            # Offline, artifact files wait in wandb's staging folder until `wandb sync`;
            # by default that is in the home folder, far from the run it belongs to.
            self._set_env("WANDB_DATA_DIR", str(self.run_dir / "wandb"))

        init: dict[str, Any] = dict(
            group=group or _hydra_multirun_group(),
            tags=list(tags) or None,
            name=name or (None if in_sweep else self.run_dir.name),
            notes=notes,
            job_type=job_type,
            config=run_config,
            dir=str(self.run_dir),
            mode=self.mode,
        )
        if not in_sweep:  # an agent's run belongs to the sweep's project, under the id it was given
            init.update(project=project, entity=entity)
            if run_id:
                init.update(id=run_id, resume="allow")
        if "WANDB_SILENT" not in os.environ:
            # wandb's banners and end-of-run tables drown the training log; the one
            # line that matters (where the run is) is logged below instead.
            init["settings"] = wandb.Settings(silent=True)
        made_run_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        before = _folder_state(self.run_dir / "wandb")
        try:
            self.run = wandb.init(**init)
        except Exception as exc:  # wandb's own errors: no key for online, unknown entity, timeout
            self._unset_env()
            # What wandb made for the session that never started goes too: the run folder is
            # left as it was, so the same command can simply be run again (gancolor.train
            # removes a new run's folder that holds nothing else).
            _put_back_folder(self.run_dir / "wandb", before)
            if made_run_dir:
                try:
                    self.run_dir.rmdir()
                except OSError:
                    pass
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise TrackerError(
                f"W&B could not start in {self.mode} mode ({why}): {detail}; "
                "run `wandb login`, or set WANDB_MODE=offline, or choose logger=none"
            ) from None

        self.disabled = bool(getattr(self.run, "disabled", False)) or self.mode == "disabled"
        self.best: float | None = None
        self.last_step = 0
        self._logged_files: set[tuple] = set()  # _file_identity of every checkpoint logged
        if self.disabled:
            return
        (self.run_dir / WANDB_ID_FILE).write_text(self.run.id + "\n")
        self.best = self._stored_best()
        if self.mode == "offline":
            log.info("W&B is offline (%s); %s", why, self.sync_hint())
        else:
            log.info("W&B run: %s", self.run.url or self.run.id)

    # -- what the trainer calls -----------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        return None if self.disabled else self.run.id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, int(step))
        self.run.log(dict(metrics), step=step)
        value = metrics.get(self.monitor)
        if value is not None and math.isfinite(float(value)) and self._improves(float(value)):
            self.best = float(value)
            namespace = self.monitor.split("/", 1)[0] + "/"
            best = {f"best/{k}": float(v) for k, v in metrics.items() if k.startswith(namespace)}
            best.update({"best/step": int(step)})
            if "epoch" in metrics:
                best["best/epoch"] = int(metrics["epoch"])
            self.run.summary.update(best)

    def log_image(self, key: str, path: Path, step: int, caption: str = "") -> None:
        self.run.log({key: self.wandb.Image(str(path), caption=caption)}, step=step)

    def log_validation_table(self, rows: list[dict], step: int, key: str = "val/per_image") -> None:
        if not rows or self.disabled:
            return
        images = [k for k in TABLE_IMAGES if k in rows[0]]
        numbers = [k for k in rows[0] if k not in images]
        table = self.wandb.Table(columns=["index", *images, *numbers])
        for index, row in enumerate(rows):
            cells = [self.wandb.Image(to_uint8_image(row[k])) for k in images]
            table.add_data(index, *cells, *(_table_cell(row.get(k)) for k in numbers))
        self.run.log({key: table}, step=step)

    def log_summary(self, values: dict[str, Any]) -> None:
        """Also how a resumed trainer hands over the best value it restored, so a
        worse validation after the resume does not overwrite best/<monitor>."""
        if self.disabled:
            return
        values = dict(values)
        key = f"best/{self.monitor}"
        if key in values:
            best = values[key]
            if isinstance(best, (int, float)) and math.isfinite(best) and self._improves(float(best)):
                self.best = float(best)
            else:  # the summary already holds a better one
                values.pop(key)
        self.run.summary.update(values)

    def log_checkpoint(self, path: str | Path, aliases: Sequence[str] = ("latest",), metadata: dict | None = None) -> None:
        """With logger.log_checkpoints, one version of the artifact model-<run id>
        (type "model"). The file is stored as checkpoint.pt whatever its name, so the
        same bytes logged as last.pt and as best.pt are one version with both aliases."""
        if not self.log_checkpoints or self.disabled:
            return
        path = Path(path)
        if not path.is_file():
            log.warning("W&B: no checkpoint at %s to log", path)
            return
        stat = path.stat()
        artifact = self.wandb.Artifact(
            f"model-{self.run.id}",
            type="model",
            metadata={"file": path.name, "step": self.last_step, **(metadata or {})},
        )
        artifact.add_file(str(path), name="checkpoint.pt")
        self.run.log_artifact(artifact, aliases=list(dict.fromkeys(aliases)))
        self._logged_files.add(_file_identity(stat))

    def finish(self) -> None:
        # Called from the trainer's `finally`: an exception on its way out means the
        # run failed, and W&B (and a sweep's controller) should be told so.
        failed = sys.exc_info()[0] is not None
        try:
            if not self.disabled and not failed:
                self._log_final_checkpoints()
        finally:
            self.run.finish(exit_code=1 if failed else 0)
            self._unset_env()
            if self.mode == "offline" and not self.disabled:
                log.info("W&B run saved offline; %s", self.sync_hint())

    # -- helpers ------------------------------------------------------------------------------
    def sync_hint(self) -> str:
        sync_dir = Path(self.run.settings.sync_dir)
        sessions = list(sync_dir.parent.glob(f"offline-run-*-{self.run.id}*"))
        if len(sessions) > 1:
            # A resumed offline run: every session's folder goes up, in order, as one run.
            pattern = f"{shlex.quote(str(sync_dir.parent))}/offline-run-*-{self.run.id}*"
            return f"upload it with: wandb sync --id {self.run.id} {pattern}"
        return f"upload it with: wandb sync {shlex.quote(str(sync_dir))}"

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.monitor_mode == "max" else value < self.best

    def _stored_best(self) -> float | None:
        """The best value a resumed online run already has in its summary."""
        try:
            value = self.run.summary.get(f"best/{self.monitor}")
        except Exception:  # offline runs have no server-side summary to read
            return None
        return float(value) if isinstance(value, (int, float)) else None

    def _log_final_checkpoints(self) -> None:
        """With log_checkpoints, make sure the final last.pt and best.pt reach W&B even
        when the trainer did not log them itself (or changed them after). best.pt is a
        hard link to the checkpoint it was (last.pt then), so the same file logged under
        either name is not logged again. W&B puts `latest` on every version it is given:
        best.pt goes first, and last.pt, the latest, after it."""
        if not self.log_checkpoints:
            return
        folder = self.run_dir / "checkpoints"
        last, best = folder / "last.pt", folder / "best.pt"
        unlogged = lambda path: path.is_file() and _file_identity(path.stat()) not in self._logged_files  # noqa: E731
        if best.is_file() and last.is_file() and best.samefile(last):
            if unlogged(last):
                self.log_checkpoint(last, aliases=["latest", "best"], metadata=_saved_at(last))
            return
        best_now = unlogged(best)
        if best_now:  # its own step, not the run's last one
            self.log_checkpoint(best, aliases=["best"], metadata=_saved_at(best))
        if last.is_file() and (best_now or unlogged(last)):
            self.log_checkpoint(last, aliases=["latest"], metadata=_saved_at(last))

    def _set_env(self, name: str, value: str) -> None:
        self._restore_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def _unset_env(self) -> None:
        for name, value in self._restore_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._restore_env = {}


def _file_identity(stat: os.stat_result) -> tuple:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _saved_at(path: Path) -> dict:
    """The step a checkpoint file was saved at, for its artifact's metadata (mmap: the
    nets' weights are not read)."""
    try:
        import torch

        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {"step": int(ckpt["global_step"])}
    except Exception:  # noqa: BLE001 - not one of gancolor's checkpoints: no step to tell
        return {}


def _folder_state(folder: Path) -> dict[str, str | None] | None:
    """The names in `folder`, with their symlinks' targets (wandb repoints latest-run and
    its debug logs at each session); None when there is no such folder."""
    if not folder.is_dir():
        return None
    return {p.name: (os.readlink(p) if p.is_symlink() else None) for p in folder.iterdir()}


def _put_back_folder(folder: Path, before: dict[str, str | None] | None) -> None:
    """Undo what was added to `folder` since _folder_state gave `before`."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name not in before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        elif before[path.name] is not None and (not path.is_symlink() or os.readlink(path) != before[path.name]):
            path.unlink()
            os.symlink(before[path.name], path)


def _table_cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def _hydra_multirun_group() -> str | None:
    """In a Hydra multirun, the jobs of one sweep share a W&B group named after its folder;
    a resumed job runs alone but keeps its sweep's group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return _resumed_job_group(Path(str(hydra_cfg.runtime.output_dir)))
        return f"multirun-{Path(str(hydra_cfg.sweep.dir)).name}"
    except Exception:  # outside a Hydra job, or a Hydra without these fields
        return None


def _resumed_job_group(job_dir: Path) -> str | None:
    """The group of a multirun job resumed on its own: its folder's .hydra/hydra.yaml (a
    resume keeps the run's own, gancolor.run_folder.ResumedFolder.keep_own_record) says
    it ran in a multirun, and its sweep folder is the one above that holds Hydra's
    multirun.yaml (the recorded sweep.dir may be an unresolved ${now:...})."""
    from omegaconf import OmegaConf

    record = job_dir / ".hydra" / "hydra.yaml"
    if not record.is_file() or str(OmegaConf.select(OmegaConf.load(record), "hydra.mode")) != "MULTIRUN":
        return None
    sweep = next((parent for parent in job_dir.resolve().parents if (parent / "multirun.yaml").is_file()), None)
    return f"multirun-{sweep.name}" if sweep is not None else None


class MultiLogger(Logger):
    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    @property
    def run_id(self) -> str | None:
        return next((logger.run_id for logger in self.loggers if logger.run_id), None)

    def log_metrics(self, metrics, step):
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_image(self, key, path, step, caption=""):
        for logger in self.loggers:
            logger.log_image(key, path, step, caption)

    def log_validation_table(self, rows, step):
        for logger in self.loggers:
            logger.log_validation_table(rows, step)

    def log_summary(self, values):
        for logger in self.loggers:
            logger.log_summary(values)

    def log_checkpoint(self, path, aliases=("latest",), metadata=None):
        for logger in self.loggers:
            logger.log_checkpoint(path, aliases, metadata)

    def finish(self):
        # Every logger gets to close, even when one of them fails to.
        errors = []
        for logger in self.loggers:
            try:
                logger.finish()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
