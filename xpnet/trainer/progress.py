"""What the trainer shows: the per-epoch progress bar on stderr (tqdm when
importable, else one self-overwriting line with loss, images per second and ETA)
and the text of its report lines.

Display only: it is given plain Python numbers, never arrays; it must never decide
anything about training, and the bar must never write to stdout (report lines go
through the trainer's ``log``).
"""
import sys
import time

__all__ = ["wanted", "ProgressBar", "NO_BAR", "start_line", "epoch_line"]


def wanted(progress, verbose):
    """`progress` if given, else on when verbose and stderr is a terminal; never when quiet."""
    if not verbose:
        return False
    if progress is not None:
        return bool(progress)
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def start_line(net_name, train_size, steps, batch_size, epochs, device):
    return ("training %s on %d samples (%d steps of %d per epoch, %d epoch%s) on %s"
            % (net_name, train_size, steps, batch_size, epochs, "" if epochs == 1 else "s",
               device))


def epoch_line(epoch, epochs, losses, train_acc, test_acc, train_seconds, images, eval_seconds,
               val_acc=None, lr=None):
    ips = images / train_seconds if train_seconds > 0 else float("inf")
    return ("epoch %d/%d  loss %.4f  train acc %.4f%s  test acc %.4f%s  (%.1f s, %.0f img/s, "
            "eval %.1f s)" % (epoch, epochs, sum(losses) / len(losses), train_acc,
                              "" if val_acc is None else "  val acc %.4f" % val_acc, test_acc,
                              "" if lr is None else "  lr %.3g" % lr,
                              train_seconds, ips, eval_seconds))


def _fmt_time(s):
    s = int(round(s))
    if s >= 3600:
        return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)
    return "%d:%02d" % (s // 60, s % 60)


def _tqdm():
    # Optional and slow to import, so only when a bar is shown (never at import time).
    try:
        from tqdm.auto import tqdm
    except Exception:   # not installed, or a broken install: the plain line will do
        return None
    return tqdm


class ProgressBar:
    """Steps `initial`..`total` of one epoch; `update` after losses are read back.
    Closing twice is harmless and a closed bar ignores updates."""

    def __init__(self, total, initial, desc, batch_size):
        self.closed = False
        self.total, self.n, self.desc, self.bs = total, initial, desc, batch_size
        self.t0 = time.perf_counter()
        self.start_n = initial
        self.last = 0.0
        self.tq = None
        tqdm = _tqdm()
        if tqdm is not None:
            self.tq = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                          file=sys.stderr, dynamic_ncols=True)

    def update(self, n_steps, loss):
        if self.closed:
            return
        self.n += n_steps
        dt = time.perf_counter() - self.t0
        ips = (self.n - self.start_n) * self.bs / dt if dt > 0 else 0.0
        if self.tq is not None:
            self.tq.set_postfix_str("loss %.4f, %.0f img/s" % (loss, ips), refresh=False)
            self.tq.update(n_steps)
            return
        now = time.perf_counter()
        if self.n < self.total and now - self.last < 0.1:    # at most ~10 redraws a second
            return
        self.last = now
        rate = (self.n - self.start_n) / dt if dt > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        sys.stderr.write("\r%s %d/%d loss %.4f  %.0f img/s  ETA %s   "
                         % (self.desc, self.n, self.total, loss, ips, _fmt_time(eta)))
        sys.stderr.flush()

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.tq is not None:
            self.tq.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


class _NoBar:
    """Stands in when no bar is shown."""
    closed = True

    def update(self, n_steps, loss):
        pass

    def close(self):
        pass


NO_BAR = _NoBar()
