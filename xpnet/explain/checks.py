"""Checks by numbers: a stroke mask of images and the pointing game on heat maps."""
from .. import backend


def stroke_mask(images, threshold=0.3, dilate=2):
    """Boolean (N, H, W) mask of the pixels brighter than `threshold` (any channel),
    grown by `dilate` pixels (a square neighbourhood): "on the digit's strokes"."""
    xp = backend.namespace(images)
    m = images > threshold
    if m.ndim == 4:
        m = xp.any(m, axis=1)
    if dilate:
        n, H, W = m.shape
        dev = backend.placement(m)
        rim = xp.zeros((n, dilate, W), dtype=xp.bool, device=dev)
        pad = xp.concat([rim, m, rim], axis=1)
        side = xp.zeros((n, H + 2 * dilate, dilate), dtype=xp.bool, device=dev)
        pad = xp.concat([side, pad, side], axis=2)
        grown = xp.zeros_like(m)
        for dy in range(2 * dilate + 1):
            for dx in range(2 * dilate + 1):
                grown = grown | pad[:, dy:dy + H, dx:dx + W]
        m = grown
    return m


def pointing_hits(maps, mask):
    """Per image, whether the map's peak (the first maximum, row-major) lies in `mask`
    (both (N, H, W)); a boolean (N,) array on their device."""
    xp = backend.namespace(maps)
    n = maps.shape[0]
    peak = xp.argmax(xp.reshape(maps, (n, -1)), axis=1)
    flat = xp.reshape(mask, (n, -1))
    return xp.squeeze(xp.take_along_axis(flat, peak[:, None], axis=1), axis=1)
