"""Rebuilding a ready net from its config: shapes planned and capped before anything
is allocated (`state_shapes`, `MAX_PARAMETERS`), then `build_net` and `load_net`.
"""
import inspect
import math

from ..backend.geometry import conv_output_size, pair
from ..serialization import (MAX_MEMBERS, NpzReader, check_finite, existing_npz_path,
                             expansion_allowance)
from ..validate import positive_int as _positive_int
from .params import _dtype_name
from .book import NETS, DeepConvNet, _conv_param, _input_dim


#: The most memory (bytes) `build_net` and `load_net` let a config make them allocate
#: for the weights, which are drawn in float64 (8 bytes a value) and then cast: 512 MiB,
#: i.e. `MAX_PARAMETERS` = 2**26 values (parameters and buffers together). `load_net`
#: also bounds it by the file's size (`serialization.expansion_allowance`). A config
#: declaring more is refused before anything is allocated.
MAX_BUILD_BYTES = 2 ** 29
MAX_PARAMETERS = MAX_BUILD_BYTES // 8


def _plan_conv(shape, cp, what, fields):
    """(weight shape, output shape) of a Convolution with conv param `cp` on `shape`."""
    fn = _positive_int(cp["filter_num"], what + " filter_num")
    fs = _positive_int(cp["filter_size"], what + " filter_size")
    sy, sx = pair(cp["stride"], what + " stride")
    py, px = pair(cp["pad"], what + " pad")
    C, H, W = shape
    out = (fn, conv_output_size(H, fs, sy, py, "Convolution (%s)" % what),
           conv_output_size(W, fs, sx, px, "Convolution (%s)" % what))
    return (fn, C, fs, fs), out


def _plan_pool(shape):
    C, H, W = shape
    return (C, conv_output_size(H, 2, 2, 0, "Pooling"), conv_output_size(W, 2, 2, 0, "Pooling"))


def _plan(config):
    """``[(name, shape, fields)]`` of the parameters and buffers of the ready net that
    `config` describes, in the net's order, computed from the numbers alone (nothing
    is allocated). `fields` says which config fields (with their values) the shape
    comes from. Bad or unknown fields are a ValueError (TypeError for wrong types)."""
    if not isinstance(config, dict):
        raise ValueError("a net's config must be a dict (JSON object), got %s"
                         % type(config).__name__)
    cfg = dict(config)
    name = cfg.pop("type", None)
    cls = NETS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError("unknown network type %r; known: %s" % (name, ", ".join(NETS)))
    cfg.pop("dtype", None)
    sig = inspect.signature(cls).parameters
    unknown = sorted(k for k in cfg if k not in sig or k == "device")
    if unknown:
        raise ValueError("%s has no config field %s" % (name, ", ".join(map(repr, unknown))))
    args = {}
    for k, p in sig.items():
        if k in cfg:
            args[k] = cfg[k]
        elif p.default is inspect.Parameter.empty:
            raise ValueError("%s's config lacks the field %r" % (name, k))
        else:
            args[k] = p.default
    out = []

    def affine(i, n_in, n_out, fields):
        out.append(("W%d" % i, (n_in, n_out), fields))
        out.append(("b%d" % i, (n_out,), fields))

    def show(*keys):
        return ", ".join("%s=%r" % (k, args[k]) for k in keys)

    if name == "TwoLayerNet":
        i = _positive_int(args["input_size"], "input_size")
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(1, i, h, show("input_size", "hidden_size"))
        affine(2, h, o, show("hidden_size", "output_size"))
    elif name in ("MultiLayerNet", "MultiLayerNetExtend"):
        hidden = args["hidden_size_list"]
        if not isinstance(hidden, (list, tuple)):
            raise TypeError("hidden_size_list must be a list of positive ints, got %r"
                            % (hidden,))
        if len(hidden) > MAX_MEMBERS:
            raise ValueError("hidden_size_list has %d entries, more layers than xpnet "
                             "builds from a config (%d)" % (len(hidden), MAX_MEMBERS))
        sizes = ([_positive_int(args["input_size"], "input_size")]
                 + [_positive_int(h, "hidden_size_list entry") for h in hidden]
                 + [_positive_int(args["output_size"], "output_size")])
        bn = bool(args.get("use_batchnorm", False))
        for i in range(1, len(sizes)):
            src = ("input_size" if i == 1 else "hidden_size_list[%d]" % (i - 2),
                   "output_size" if i == len(sizes) - 1 else "hidden_size_list[%d]" % (i - 1))
            affine(i, sizes[i - 1], sizes[i], "%s=%d, %s=%d" % (src[0], sizes[i - 1], src[1],
                                                                  sizes[i]))
            if bn and i < len(sizes) - 1:
                for k in ("gamma", "beta", "running_mean", "running_var"):
                    out.append(("%s%d" % (k, i), (sizes[i],), "%s=%d" % (src[1], sizes[i])))
    elif name == "SimpleConvNet":
        shape = _input_dim(args["input_dim"])
        cp = _conv_param(args["conv_param"], "conv_param",
                         {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1})
        w, shape = _plan_conv(shape, cp, "conv_param", None)
        src = "input_dim=%r, conv_param=%r" % (list(args["input_dim"]), cp)
        out += [("W1", w, src), ("b1", (w[0],), src)]
        shape = _plan_pool(shape)
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(2, math.prod(shape), h, src + ", " + show("hidden_size"))
        affine(3, h, o, show("hidden_size", "output_size"))
    else:   # DeepConvNet
        shape = _input_dim(args["input_dim"])
        src = "input_dim=%r" % (list(args["input_dim"]),)
        for i, d in enumerate(DeepConvNet._DEFAULTS):
            key = "conv_param_%d" % (i + 1)
            cp = _conv_param(args[key], key, d)
            w, shape = _plan_conv(shape, cp, key, None)
            src += ", %s=%r" % (key, cp)
            out += [("W%d" % (i + 1), w, src), ("b%d" % (i + 1), (w[0],), src)]
            if i % 2 == 1:
                shape = _plan_pool(shape)
        h = _positive_int(args["hidden_size"], "hidden_size")
        o = _positive_int(args["output_size"], "output_size")
        affine(7, math.prod(shape), h, src + ", " + show("hidden_size"))
        affine(8, h, o, show("hidden_size", "output_size"))
    # state_dict's order: parameters, then buffers
    return ([t for t in out if not t[0].startswith("running_")]
            + [t for t in out if t[0].startswith("running_")])


def config_for_shapes(shapes, input_dim=(1, 28, 28)):
    """The config of a ready net whose parameters have exactly these ``{name: shape}``
    (a parameter file without an architecture, such as the book's pickles): the book's
    DeepConvNet and SimpleConvNet for `input_dim` images, then the fully connected nets.
    None when none fits."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    W = [shapes.get("W%d" % i) for i in range(1, len(shapes) + 1)]
    W = [w for w in W if w is not None]
    candidates = [{"type": "DeepConvNet", "input_dim": list(input_dim)}]
    if len(W) == 3 and len(W[0]) == 4:
        candidates.append({"type": "SimpleConvNet", "input_dim": list(input_dim),
                           "conv_param": {"filter_num": W[0][0], "filter_size": W[0][2],
                                          "pad": 0, "stride": 1},
                           "hidden_size": W[1][1], "output_size": W[2][1]})
    if W and all(len(w) == 2 for w in W):
        candidates.append({"type": "TwoLayerNet" if len(W) == 2 else "MultiLayerNet",
                           "input_size": W[0][0], "output_size": W[-1][1],
                           **({"hidden_size": W[0][1]} if len(W) == 2 else
                              {"hidden_size_list": [w[1] for w in W[:-1]]})})
    for cfg in candidates:
        try:
            if state_shapes(cfg) == shapes:
                return cfg
        except (TypeError, ValueError):
            continue
    return None


def state_shapes(config):
    """``{name: shape}`` of the parameters and buffers (``state_dict`` keys) of the ready
    net `config` describes, computed without building it: no array is allocated.
    Invalid fields raise ValueError/TypeError naming the field."""
    return {k: s for k, s, _ in _plan(config)}


def _checked_plan(config, file_size=None):
    """`_plan`, refused (ValueError naming the largest array and the fields it comes
    from) when the net would hold more than `MAX_PARAMETERS` values, or (for a config
    read from a file of `file_size` bytes) take more than that file may make xpnet
    allocate."""
    try:
        plan = _plan(config)
    except TypeError as e:
        raise ValueError("can't rebuild %s from its config: %s"
                         % (config.get("type"), e)) from None
    total = sum(math.prod(s) for _, s, _ in plan)
    if total > MAX_PARAMETERS:
        k, s, src = max(plan, key=lambda t: math.prod(t[1]))
        raise ValueError("%s's config declares %s parameter values, more than xpnet builds "
                         "(MAX_PARAMETERS = %s): the largest, %s, has shape %s from %s"
                         % (config.get("type"), format(total, ","),
                            format(MAX_PARAMETERS, ","), k, s, src))
    if file_size is not None and 8 * total > expansion_allowance(file_size):
        k, s, src = max(plan, key=lambda t: math.prod(t[1]))
        raise ValueError("%s's config declares %s parameter values (%d bytes to build), more "
                         "than a file of %d bytes may make xpnet allocate (%d bytes): the "
                         "largest, %s, has shape %s from %s"
                         % (config.get("type"), format(total, ","), 8 * total, file_size,
                            expansion_allowance(file_size), k, s, src))
    return plan


def build_net(config, device=None, dtype=None):
    """Rebuild a ready net from its ``config`` (as saved in a parameter file). The
    config's shapes are computed and checked first (`state_shapes`, `MAX_PARAMETERS`),
    so a config declaring a huge net is refused before anything is allocated."""
    _checked_plan(config)
    cfg = dict(config)
    name = cfg.pop("type", None)
    cls = NETS.get(name)
    if dtype is not None:
        cfg["dtype"] = dtype
    if "input_dim" in cfg:
        cfg["input_dim"] = tuple(cfg["input_dim"])
    try:
        return cls(device=device, **cfg)
    except TypeError as e:
        raise ValueError("can't rebuild %s from its saved config: %s" % (name, e)) from None


def load_net(file_name, device=None, dtype=None, allow_nonfinite=False):
    """Rebuild a ready-made net from a parameter file and load its weights.

    Before any array data is read or any net is built: the metadata must be a JSON
    object whose architecture is valid and within `MAX_PARAMETERS`, and the file's
    arrays (from their .npy headers) must be exactly the parameters that architecture
    has, with its shapes, in a float dtype. Values must then be finite. Every refusal
    is a ValueError naming the file and the field or array. What the file can make
    xpnet allocate is bounded by its size (`serialization.expansion_allowance`).
    `allow_nonfinite` reads a file holding NaN or infinite values (a diverged net's)."""
    path = existing_npz_path(file_name)
    with NpzReader(path) as r:
        meta = r.meta
        arch = meta.get("architecture")
        if not arch:
            raise ValueError("%s has no architecture metadata; build the net yourself and use "
                             "net.load_params(...)" % path)
        if not isinstance(arch, dict):
            raise ValueError("%s: metadata field 'architecture' must be a JSON object, got %s"
                             % (path, type(arch).__name__))
        arch = dict(arch)
        saved_dt = arch.pop("dtype", None) or meta.get("dtype") or "float32"
        dt = _dtype_name(dtype) if dtype is not None else None   # the caller's: no prefix
        try:
            dt = dt or _dtype_name(saved_dt)
            plan = _checked_plan(arch, r.file_size)
        except (ValueError, TypeError) as e:
            raise ValueError("%s: bad architecture metadata: %s" % (path, e)) from None
        r.check_params({k: s for k, s, _ in plan}, arch["type"])
        arrays = r.read()
    if not allow_nonfinite:
        check_finite(arrays, path)
    net = build_net(arch, device=device, dtype=dt)
    net.load_state_dict(arrays, allow_nonfinite=allow_nonfinite)
    return net
