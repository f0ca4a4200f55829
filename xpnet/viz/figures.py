"""Making a figure without pyplot (the Agg canvas directly) and saving it atomically;
matplotlib is imported only when a figure is made.
"""
import io
import os

from ..serialization import atomic_write_bytes


def have_matplotlib():
    """``(True, version)`` if matplotlib can be imported, else ``(False, reason)``."""
    try:
        import matplotlib
    except Exception as e:
        return False, "matplotlib is not installed (%s); install it with `pip install " \
                      "matplotlib` or, in the xpnet checkout, `pip install -e \".[plot]\"`" % (e,)
    return True, matplotlib.__version__


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as e:
        raise ImportError("xpnet.viz needs matplotlib (%s); install it with `pip install "
                          "matplotlib`" % e) from None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=100, tight=True):
    """Write `fig` as a PNG to `path` atomically; returns the path. ``tight=False`` keeps
    the figure's own size (``figsize * dpi`` pixels) instead of cropping to the drawing."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def _done(fig, path, tight=True):
    if path is not None:
        save_figure(fig, path, tight=tight)
    return fig
