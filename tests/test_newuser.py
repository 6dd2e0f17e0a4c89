"""What a new user hits in the first hour (issue 17): mistakes that must give one clear
line before any work (and before torch is imported), run folders that are never
clobbered, options that would silently do nothing, and numbers that would mislead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gancolor.errors import CheckpointError, UserError
from helpers import gancolor_env, one_error_line, run_gancolor, tiny_checkpoint

REPO = Path(__file__).resolve().parent.parent


# -- files that are not what they are given as ------------------------------------------


def test_a_text_file_given_as_a_checkpoint_is_named_as_not_one(tmp_path):
    from gancolor.checkpoint import load_checkpoint

    for text in ("some notes\n", "hello world\n", "epoch 3: 21.3 dB\n"):  # torch.load: 101, pop from empty list, ...
        notes = tmp_path / "notes.txt"
        notes.write_text(text)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(notes)
        assert str(info.value) == f"{notes} is not a checkpoint file (a .pt that gancolor's training wrote)"
