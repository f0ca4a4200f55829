"""Plots for training runs: curves, filters, image grids, activation histograms,
confusion matrices; and for looking inside a net (`xpnet.explain`): heatmap overlays,
feature-map grids, filters before/after training, top-activating images.

matplotlib is imported only when a plot is made (``import xpnet`` never needs
it), and figures are drawn with the Agg canvas directly, so nothing here
touches pyplot's global backend or needs a display. Every function returns the
`matplotlib.figure.Figure`; with ``path=`` the PNG is also written atomically.
Arrays may live on the CPU or the GPU.

The parts: `figures` (making and saving a figure), `training` (a run's plots), `inside`
(the plots of `xpnet.explain`).
"""
from .figures import have_matplotlib, save_figure
from .training import (activation_histograms, confusion_matrix, image_grid, plot_confusion_matrix,
                       plot_filters, plot_history, plot_misclassified)
from .inside import (plot_feature_maps, plot_filters_before_after, plot_heatmaps,
                     plot_top_activating)

__all__ = ["have_matplotlib", "save_figure", "plot_history", "plot_filters", "image_grid",
           "plot_misclassified", "activation_histograms", "confusion_matrix",
           "plot_confusion_matrix", "plot_heatmaps", "plot_feature_maps",
           "plot_filters_before_after", "plot_top_activating"]
