"""Stopping a run cleanly: SIGTERM (cluster preemption) and SIGINT (Ctrl-C) ask for a
checkpoint at the next step boundary and a clean exit; a second Ctrl-C aborts at once,
except during a checkpoint write, which it never cuts short: the abort follows the write.

Under torchrun every rank gets the signal; rank 0 alone says so.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import torch

from gancolor import distributed

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer that asks for them


class StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None  # the signal that asked this process to stop
        self.saving = False  # inside `uninterrupted()`
        self.abort_pending = False  # a second Ctrl-C came during a save

    @contextlib.contextmanager
    def catching_signals(self):
        """Record SIGTERM and SIGINT instead of dying of them, for the duration."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self.signal == signal.SIGINT and signum == signal.SIGINT:
                if not self.saving:
                    raise KeyboardInterrupt
                self.abort_pending = True
                if distributed.is_main():
                    log.warning("Ctrl-C again: stopping once the checkpoint being written is complete")
                return
            if self.signal is None and distributed.is_main():
                log.warning("%s received: saving a checkpoint at the end of this step", signal.Signals(signum).name)
            self.signal = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def uninterrupted(self):
        """A block (a checkpoint write) that a second Ctrl-C must not cut short: the
        abort it asks for (KeyboardInterrupt) comes when the block is done."""
        saving, self.saving = self.saving, True
        try:
            yield
        finally:
            self.saving = saving
        if self.abort_pending and not saving:
            self.abort_pending = False
            raise KeyboardInterrupt

    def requested(self, device: torch.device, vote: bool = True) -> bool:
        """A signal reached this process or, under DDP, any rank (they may get it at
        different steps): every rank votes, and all stop at this step. Under DDP only
        a `vote` asks the others (an all-reduce the host waits for, so the trainer
        votes at log steps); between votes no rank stops alone."""
        if not distributed.active():
            return self.signal is not None
        if not vote:
            return False
        if distributed.any_rank(self.signal is not None, device) and self.signal is None:
            self.signal = signal.SIGTERM
        return self.signal is not None
