"""Data augmentation for image batches, on the net's device: ``Trainer(augment="shift:2")``.

`from_spec("shift:2,flip,erase:0.25,rotate:10")` gives an `Augment` applied to each
training batch ``(N, C, H, W)`` where the batch already is. Operations, in this order:

- ``shift:P`` (or ``crop:P``): pad by P pixels of 0 and crop the original size at a
  random place, i.e. move the image by up to P pixels each way;
- ``rotate:D``: rotate by a random angle in [-D, D] degrees about the centre
  (nearest-neighbour sampling; corners that come from outside are 0);
- ``flip``: mirror left-right with probability 1/2 (for colour photos and other
  images whose mirror image is the same class; never for digits);
- ``erase:P``: with probability P, set a random rectangle (2-33% of the image,
  aspect 0.3-3.3) to 0 (random erasing, Zhong et al. 2017).

The random choices (a few numbers per image) are drawn on the host from the
generator the trainer passes, which it seeds and checkpoints, so a resumed run sees
the same augmented batches. The pixel work is one gather and one mask written with
Array API functions only, so it runs on NumPy, CuPy, PyTorch and array_api_strict.
"""
import math

from ..backend import device_of, host_zeros, namespace, placement, to_device

__all__ = ["Augment", "from_spec", "OPS"]

OPS = ("shift", "crop", "rotate", "flip", "erase")


def _bad(spec, why):
    return ValueError("augment %r: %s (example: 'shift:2,flip,erase:0.25,rotate:10')"
                      % (spec, why))


class Augment:
    """`shift` (pixels), `rotate` (degrees), `flip` (bool), `erase` (probability)."""

    def __init__(self, shift=0, rotate=0.0, flip=False, erase=0.0):
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 64:
            raise ValueError("augment: shift must be an int of pixels in [0, 64], got %r"
                             % (shift,))
        if not isinstance(rotate, (int, float)) or isinstance(rotate, bool) or \
                not 0 <= rotate <= 180:
            raise ValueError("augment: rotate must be degrees in [0, 180], got %r" % (rotate,))
        if not isinstance(erase, (int, float)) or isinstance(erase, bool) or not 0 <= erase <= 1:
            raise ValueError("augment: erase must be a probability in [0, 1], got %r"
                             % (erase,))
        self.shift, self.rotate, self.flip, self.erase = shift, float(rotate), bool(flip), \
            float(erase)

    @property
    def spec(self):
        parts = []
        if self.shift:
            parts.append("shift:%d" % self.shift)
        if self.rotate:
            parts.append("rotate:%g" % self.rotate)
        if self.flip:
            parts.append("flip")
        if self.erase:
            parts.append("erase:%g" % self.erase)
        return ",".join(parts)

    def __repr__(self):
        return "Augment(%r)" % self.spec

    def check_input(self, shape, name="x_train"):
        """Refuse data that isn't a batch of images, naming its shape."""
        if len(shape) != 4:
            raise ValueError("Trainer: augment=%r needs images shaped (N, C, H, W); %s has "
                             "shape %s (load the data with flatten=False)"
                             % (self.spec, name, tuple(shape)))

    # ---------------------------------------------------------------- random choices
    def draw(self, rng, n, h, w):
        """Per-image parameters for `n` images as a host float32 array (n, 9): dy, dx,
        cos, sin, flip, and the erased rectangle's rows y0:y1 and columns x0:x1
        (all 0: nothing erased). Always the same draws in the same order for one spec."""
        p = host_zeros((n, 9))      # host random numbers only; the pixel work is on x's device
        hx = namespace(p)
        p[:, 2] = 1.0
        if self.shift:
            p[:, 0:2] = rng.integers(-self.shift, self.shift + 1, size=(n, 2))
        if self.rotate:
            a = hx.asarray(rng.uniform(-self.rotate, self.rotate, size=n) * (math.pi / 180))
            p[:, 2], p[:, 3] = hx.cos(a), hx.sin(a)
        if self.flip:
            p[:, 4] = rng.random(n) < 0.5
        if self.erase:
            on = hx.asarray(rng.random(n) < self.erase)
            area = hx.asarray(rng.uniform(0.02, 0.33, size=n) * (h * w))
            ratio = hx.exp(hx.asarray(rng.uniform(math.log(0.3), math.log(1 / 0.3), size=n)))
            eh = hx.astype(hx.clip(hx.round(hx.sqrt(area * ratio)), 1, h), hx.int64)
            ew = hx.astype(hx.clip(hx.round(hx.sqrt(area / ratio)), 1, w), hx.int64)
            y0 = hx.astype(hx.floor(hx.asarray(rng.random(n)) * (h - eh + 1)), hx.int64)
            x0 = hx.astype(hx.floor(hx.asarray(rng.random(n)) * (w - ew + 1)), hx.int64)
            p[:, 5], p[:, 6] = hx.where(on, y0, 0), hx.where(on, y0 + eh, 0)
            p[:, 7], p[:, 8] = hx.where(on, x0, 0), hx.where(on, x0 + ew, 0)
        return hx.astype(p, hx.float32)

    # ---------------------------------------------------------------- the pixel work
    def __call__(self, x, rng, total=None, offset=0):
        """`x` augmented (a new array where `x` lives). Parameters are drawn for `total`
        images (a data-parallel step's global batch; default ``len(x)``) and this
        batch uses rows ``offset:offset+len(x)`` of them."""
        n, c, h, w = (int(s) for s in x.shape)
        params = self.draw(rng, n if total is None else total, h, w)[offset:offset + n]
        if not (self.shift or self.rotate or self.flip or self.erase):
            return x
        xp = namespace(x)
        p = to_device(params, device_of(x))
        col = [xp.reshape(p[:, k], (n, 1, 1)) for k in range(9)]
        i = xp.reshape(xp.astype(xp.arange(h, device=placement(x)), xp.float32), (1, h, 1))
        j = xp.reshape(xp.astype(xp.arange(w, device=placement(x)), xp.float32), (1, 1, w))
        out = x
        if self.shift or self.rotate or self.flip:
            out = self._resample(xp, x, col, i, j, n, c, h, w)
        if self.erase:
            hit = (i >= col[5]) & (i < col[6]) & (j >= col[7]) & (j < col[8])
            out = out * xp.astype(~xp.reshape(hit, (n, 1, h, w)), x.dtype)
        return out

    def _resample(self, xp, x, col, i, j, n, c, h, w):
        """Each output pixel takes its source pixel under the image's shift, rotation
        and flip (nearest neighbour); sources outside the image give 0."""
        dy, dx, cos, sin, flip = col[:5]
        cy, cx = (h - 1) / 2, (w - 1) / 2
        jj = j + flip * ((w - 1) - 2 * j)           # mirrored output column when flipped
        yy, xx = i - cy - dy, jj - cx - dx
        si = xp.round(cos * yy + sin * xx + cy)     # positive angles turn anticlockwise
        sj = xp.round(cos * xx - sin * yy + cx)
        inside = (si >= 0) & (si <= h - 1) & (sj >= 0) & (sj <= w - 1)
        index = _index_dtype(xp)
        pix = xp.astype(xp.where(inside, si * w + sj, xp.zeros_like(si)), index)
        img = xp.reshape(xp.arange(n * c, dtype=index, device=placement(x)), (n, c, 1, 1))
        idx = img * (h * w) + xp.reshape(pix, (n, 1, h, w))
        out = xp.take(xp.reshape(x, (-1,)), xp.reshape(idx, (-1,)), axis=0)
        out = xp.reshape(out, (n, c, h, w))
        return out * xp.astype(xp.reshape(inside, (n, 1, h, w)), x.dtype)


def _index_dtype(xp):
    """The library's own index dtype (JAX: int32 unless 64-bit mode is on)."""
    try:
        return xp.__array_namespace_info__().default_dtypes()["indexing"]
    except (AttributeError, KeyError, TypeError):
        return xp.int64


def from_spec(spec):
    """An `Augment` from ``"shift:2,flip,erase:0.25,rotate:10"`` (None or '' for none;
    an `Augment` is returned as it is)."""
    if spec is None or isinstance(spec, Augment):
        return spec
    if not isinstance(spec, str):
        raise TypeError("augment must be a spec such as 'shift:2,flip' or an Augment, got %r"
                        % (spec,))
    if not spec.strip():
        return None
    kw = {}
    for part in spec.split(","):
        name, _, value = part.strip().partition(":")
        if name not in OPS:
            raise _bad(spec, "unknown operation %r; choose from %s" % (name, ", ".join(OPS)))
        key = "shift" if name == "crop" else name
        if key in kw:
            raise _bad(spec, "%s is given twice" % key)
        if key == "flip":
            if value:
                raise _bad(spec, "flip takes no value")
            kw[key] = True
            continue
        if not value:
            raise _bad(spec, "%s needs a value, as in %s:%s"
                       % (name, name, {"shift": 2, "crop": 4, "rotate": 10}.get(name, 0.25)))
        try:
            kw[key] = int(value) if key == "shift" else float(value)
        except ValueError:
            raise _bad(spec, "%s:%s is not a %s" % (name, value, "whole number of pixels"
                                                    if key == "shift" else "number")) from None
    try:
        return Augment(**kw)
    except ValueError as e:
        raise _bad(spec, str(e)[len("augment: "):]) from None
