"""`xpnet info`: versions, compute devices, CPU threads and where the data sets are."""
import importlib.metadata
import json
import os
import platform

import numpy as np

from .. import backend
from ..backend import cpu_threads as parallel
from ..version import __version__


def add_parser(sub):
    i = sub.add_parser("info", help="versions, devices and where the data sets are",
                       description="Print versions, compute devices and data set locations.")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--data-dir", default=None)
    i.set_defaults(func=cmd_info)


def _dist_version(module):
    """The installed version of the distribution that provides `module` (cupy comes
    as cupy-cuda12x, ...), from its metadata: nothing is imported."""
    try:
        dists = importlib.metadata.packages_distributions().get(module) or [module]
    except AttributeError:   # Python 3.9 has no packages_distributions
        dists = [module]
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def _dtypes(name):
    """The dtype names device `name` holds (`Device.dtypes`), or None if it can't say."""
    try:
        return list(backend.get_device(name).dtypes)
    except (backend.DeviceError, AttributeError):   # an older backend without `dtypes`
        return None


def _info(data_dir=None):
    from .. import datasets
    info = {"xpnet": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__, "cupy": None,
            "devices": [{"name": "cpu", "backend": "numpy", "available": True}],
            "xpnet_device_env": os.environ.get("XPNET_DEVICE"), "default_device": None,
            "optional": {}, "datasets": {}, "cpu_threads": parallel.info()}
    info["cupy"] = _dist_version("cupy")
    ok, why = backend.gpu_available()
    if ok:
        cp = backend.get_device("gpu").xp
        info["cupy"] = cp.__version__
        for i in range(cp.cuda.runtime.getDeviceCount()):
            try:
                name = cp.cuda.runtime.getDeviceProperties(i)["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
            except Exception:
                name = "?"
            info["devices"].append({"name": "gpu:%d" % i, "backend": "cupy", "available": True,
                                    "model": name})
    else:
        info["devices"].append({"name": "gpu", "backend": "cupy", "available": False,
                                "reason": why})
    for d in info["devices"]:
        if d["available"]:
            d["dtypes"] = _dtypes(d["name"])
    try:
        info["default_device"] = backend.current_device().name
    except backend.DeviceError as e:
        info["default_device"] = "error: %s" % e
    info["device_names"] = backend.DEVICE_HELP
    for mod in ("matplotlib", "tqdm", "torch", "array_api_strict"):
        info["optional"][mod] = _dist_version(mod)
    for name in datasets.NAMES:
        try:
            loc = datasets.locate(name, data_dir)
        except Exception as e:  # a broken search path must not break `info`
            info["datasets"][name] = {"found": False, "error": "%s: %s" % (type(e).__name__, e)}
            continue
        info["datasets"][name] = {
            "found": bool(loc.get("found")), "dir": loc.get("dir"),
            "searched": [("%s (%s)" % (s["dir"], s["origin"])) for s in loc.get("search_path", [])],
            "cache_dir": None if loc.get("cache_dir") is None else str(loc["cache_dir"])}
    return info


def cmd_info(args):
    info = _info(args.data_dir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print("xpnet %s  (Python %s, %s)" % (info["xpnet"], info["python"], info["platform"]))
    print("NumPy %s, CuPy %s" % (info["numpy"], info["cupy"] or "not installed"))
    print("devices:")
    for d in info["devices"]:
        if d["available"]:
            print("  %-6s %s%s" % (d["name"], d["backend"],
                                   "  (%s)" % d["model"] if d.get("model") else ""))
            if d.get("dtypes"):
                print("         dtypes: %s" % ", ".join(d["dtypes"]))
        else:
            print("  %-6s not available: %s" % (d["name"], d["reason"]))
    print("device names: %s" % info["device_names"])
    print("default device: %s (XPNET_DEVICE=%s)"
          % (info["default_device"], info["xpnet_device_env"] or "unset"))
    th = info["cpu_threads"]
    print("CPU threads: %d (XPNET_NUM_THREADS=%s; BLAS %s%s)"
          % (th["threads"], os.environ.get("XPNET_NUM_THREADS") or "unset",
             th["blas"] or "not found", ", %s threads" % th["blas_threads"]
             if th["blas_threads"] else ": " + th["disabled_because"]))
    print("optional: " + ", ".join("%s %s" % (k, v or "not installed")
                                   for k, v in info["optional"].items()))
    print("data sets:")
    for name, d in info["datasets"].items():
        if d.get("error"):
            print("  %-14s error: %s" % (name, d["error"]))
        elif d["found"]:
            print("  %-14s found in %s" % (name, d["dir"]))
        else:
            print("  %-14s not found; searched: %s%s"
                  % (name, "; ".join(d["searched"]) or "-",
                     "; downloads go to %s" % d["cache_dir"] if d.get("cache_dir") else ""))
    return 0

