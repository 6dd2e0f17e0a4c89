"""`python -m gancolor ARGS` in a process of its own that does not pay for the imports.

A training command spends ~8 s importing torch, torch._dynamo (any optimiser pulls it
in), albumentations and Hydra before its first step; the resume tests start dozens of
them. Here a multiprocessing forkserver imports all that once per test process, and each
command is a fork of it: a separate process with its own pid, exit status, signal
handlers, environment variables (as read at run time), working directory, stdout and
stderr, so SIGKILL, SIGTERM and exit codes mean what they mean for `python -m gancolor`,
and its DataLoader workers start as the parent's Python starts them (fork on Linux up
to 3.13). The server runs no torch op, so a fork starts with no thread pool to inherit.

What a fork shares with its server, unlike a fresh interpreter: the string-hash seed
(every command hashes alike; a real run draws its own), and whatever was read from the
environment at import time (OMP_NUM_THREADS, TORCH_LOGS, TORCHDYNAMO_*: the pytest
process's values when the server started). Tests that need those, and the `python -m`
entry point itself, use real subprocesses: test_cli.py, test_newuser.py, and the resume
after SIGTERM in test_resume.py (an uninterrupted run against one resumed under another
hash seed).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers import gancolor_env

# What `python -m gancolor` imports before its first step (the forkserver ignores a name
# it cannot import).
PRELOAD = [
    "torch", "torch._dynamo", "torchvision.utils", "albumentations", "hydra", "omegaconf",
    "gancolor.cli", "gancolor.train", "gancolor.validation", "gancolor.distributed",
    "gancolor.models.pix2pix", "gancolor.models.cyclegan", "gancolor.models.stargan", "gancolor.models.cic",
    "warm",
]  # fmt: skip

_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _train_command(args: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str, start_method: str) -> None:
    """The child: become `python -m gancolor ARGS` run in `cwd` with `env`."""
    # multiprocessing made this child's default start method its own (forkserver);
    # training's DataLoader workers must start as a real run's do.
    multiprocessing.set_start_method(start_method, force=True)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    sys.argv = [str(Path(sys.modules["gancolor"].__file__).parent / "__main__.py"), *args]
    from gancolor.cli import train_main

    try:
        train_main()
    finally:
        atexit._run_exitfuncs()  # multiprocessing's children leave through os._exit
        sys.stdout.flush()
        sys.stderr.flush()


class TrainCommand:
    """A started training command, read like subprocess.Popen (text mode)."""

    def __init__(self, args: list[str], cwd: Path | None, cache: Path):
        self._files = tempfile.TemporaryDirectory(prefix="gancolor-warm-")
        self._out = os.path.join(self._files.name, "stdout")
        self._err = os.path.join(self._files.name, "stderr")
        env = gancolor_env(cache)
        self.args = list(args)
        self._process = _forkserver().Process(
            target=_train_command,
            args=(self.args, env, str(cwd or os.getcwd()), self._out, self._err, multiprocessing.get_start_method()),
        )
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
            raise subprocess.TimeoutExpired(["gancolor", *self.args], timeout)
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return tuple(Path(f).read_text() if os.path.exists(f) else "" for f in (self._out, self._err))

    def finished(self, timeout: float = 300) -> subprocess.CompletedProcess:
        out, err = self.communicate(timeout)
        self._files.cleanup()
        return subprocess.CompletedProcess(["gancolor", *self.args], self.returncode, out, err)


def run_gancolor(args: list[str], cwd: Path | None, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """helpers.run_gancolor's twin: `python -m gancolor ARGS` in `cwd` (None: this one), to
    the end; returncode, stdout and stderr as subprocess.run gives them."""
    return TrainCommand(args, cwd, cache).finished(timeout)
