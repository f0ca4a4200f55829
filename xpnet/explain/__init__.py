"""Seeing inside a net: feature maps, Grad-CAM, saliency (SmoothGrad) and occlusion.

Every function takes a `Sequential` net (SimpleConvNet, DeepConvNet or a user's own) and
a batch ``x`` (host or device data; it is moved to the net's device and dtype), and returns
arrays on the net's device unless its docstring says otherwise (`top_activating` returns
Python lists). Layers are named by type and 1-based position in ``net.layers``
("Convolution1", "Relu2", "Pooling3", ...; see `layer_names`).

How the passes run:
- forwards are evaluation passes (``train_flg=False``): Dropout is the identity and
  BatchNorm uses its running statistics, which are never updated;
- gradients come from the layers' own ``backward`` methods; the one exception is
  BatchNormalization, whose ``backward`` is the training-mode formula (it needs the
  batch statistics of a training forward). In evaluation BatchNorm is the per-channel
  affine map ``gamma * (x - mean) / sqrt(var + eps) + beta``, so its input gradient is
  ``dout * gamma / sqrt(var + eps)``, computed here (`_batchnorm_eval_backward`);
- the gradient that flows back is that of the class *score* (the net's output before
  the softmax), as in the Grad-CAM and saliency papers.

What this module must never do: change the net. Parameters, gradients, BatchNorm running
statistics, each layer's forward caches (``_c_*``), its column-buffer workspace and the
first layer's ``need_input_grad`` are put back exactly as they were (`_untouched`), so a
training step interrupted by an explanation continues as if nothing had happened. It uses
standard Array API calls only (no NumPy import, no library checks), so it runs on every
device of `xpnet.backend`.

The parts: `passes` (naming layers, running the passes untouched), `maps` (feature
maps, Grad-CAM, top-activating images), `attribution` (saliency, occlusion), `checks`
(stroke masks and the pointing game).
"""
from .passes import (LayerGradient, activation_layer, default_cam_layer, find_layer,
                     layer_gradient, layer_names)
from .maps import _axis_grid, feature_maps, grad_cam, top_activating  # noqa: F401 (tests)
from .attribution import occlusion, saliency
from .checks import pointing_hits, stroke_mask

__all__ = ["layer_names", "find_layer", "default_cam_layer", "activation_layer",
           "feature_maps", "layer_gradient",
           "LayerGradient", "grad_cam", "saliency", "occlusion", "top_activating",
           "pointing_hits", "stroke_mask"]
