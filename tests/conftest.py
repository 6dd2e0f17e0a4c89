import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never talk to W&B's servers and never wait on a prompt.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist each worker (and every process it starts) gets its share of the cores:
# two workers on two cores, each with torch's default of two threads, spin against each
# other and run some tests ten times slower. Alone (pytest -n0): up to 2 threads.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_threads = max(1, _cores // _workers) if _workers > 1 else min(2, torch.get_num_threads())
torch.set_num_threads(_threads)
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real colour photographs that scikit-image ships (no download)."""
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """GANCOLOR_CACHE for end-to-end runs: the sample photos are written there once per session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small_photo_folder(tmp_path_factory, photos) -> Path:
    """Eight small colour photos (shifted copies of `photos` at a quarter of their size)."""
    from helpers import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("small_photos"), photos, copies=2)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny nets: they gain nothing from a second
    thread, and lose about ten times over when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Any attempt to reach the network fails the test; torch's cache is an empty folder."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
