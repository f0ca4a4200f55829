"""Ctrl-C during `Trainer.train`: the first SIGINT only asks training to stop after
the current step (so a checkpoint of a consistent state can be written); a second
one interrupts at once.

The handler sets a flag and nothing else; this module must never touch the trainer,
arrays or files, and must never replace a SIGINT handler that someone else installed.
"""
import signal
import sys
import threading

__all__ = ["StopOnSigint", "stop_message"]


class StopOnSigint:
    """``with stop: ...`` installs the handler (main thread, default handler only) and
    puts the previous one back; `requested` is True after the first Ctrl-C."""

    def __init__(self, announce=True):
        self.announce = announce
        self.requested = False
        self._previous = None

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                return self
            signal.signal(signal.SIGINT, self._handle)
        except (ValueError, OSError):     # no signals here (embedded interpreters)
            return self
        self._previous = signal.default_int_handler
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def clear(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            sys.stderr.write("\ninterrupt: stopping after this step (Ctrl-C again to abort "
                             "at once)\n")


def stop_message(in_step, step, epoch, batch, steps_per_epoch, saved_to, last_checkpoint):
    """What to tell the user after an interrupt (`step` = steps done, `saved_to` = the new
    checkpoint or None)."""
    if in_step:
        msg = "training interrupted during an update at step %d; " % (step + 1)
        return msg + ("resume from the last checkpoint %s" % last_checkpoint
                      if last_checkpoint else "no checkpoint was written")
    msg = "training interrupted after step %d (epoch %d, batch %d of %d); " % (
        step, epoch, batch, steps_per_epoch)
    return msg + ("checkpoint written to %s; continue with resume=%r" % (saved_to, saved_to)
                  if saved_to else "no checkpoint_dir was given, so nothing was saved")
