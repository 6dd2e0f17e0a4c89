"""User mistakes under torchrun (two CPU processes, gloo): said once, by rank 0, before
anything is written. A file of its own so that pytest-xdist (--dist loadfile) can run it
beside test_ddp.py's long stop-and-resume test."""

import pytest
from test_ddp import gancolor_lines, torchrun

pytestmark = pytest.mark.slow


def test_a_mistake_under_torchrun_is_said_once_by_rank_0(tmp_path):
    cache = tmp_path / "cache"
    # Found before the ranks join their group (the command line), and after (the data folder).
    bad_value = torchrun(["trainer=ddp", "data.batch_size=abc", "logger=none"], tmp_path, cache)
    assert bad_value.returncode != 0
    assert gancolor_lines(bad_value) == ["gancolor: error: data.batch_size must be an integer, got 'abc'"], bad_value.stderr[-3000:]
    (tmp_path / "empty").mkdir()
    no_photos = torchrun(["trainer=ddp", "data=folder", f"data.root={tmp_path / 'empty'}", "logger=none"], tmp_path, cache)
    assert no_photos.returncode != 0
    assert [line.split(" under ")[0] for line in gancolor_lines(no_photos)] == [
        "gancolor: error: data.root: no images (any format Pillow reads)"], no_photos.stderr[-3000:]
    assert not (tmp_path / "runs").exists()


def test_a_multirun_under_torchrun_is_refused_before_anything_is_written(tmp_path):
    sweep = tmp_path / "sweep"
    result = torchrun(["-m", "trainer=ddp", "loss.lambda_L1=10,100", "logger=none", f"hydra.sweep.dir={sweep}"], tmp_path, tmp_path / "cache")
    assert result.returncode != 0
    refusal = ("gancolor: error: multirun (-m) under torchrun is not supported: run the sweep without torchrun, "
               "or one torchrun per setting")
    assert gancolor_lines(result) == [refusal], result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr, "rank 0 exits as for any user mistake"
    assert not sweep.exists() and not (tmp_path / "multirun").exists() and not (tmp_path / "runs").exists()
