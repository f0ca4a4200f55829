"""RawKernel of the CuPy stand-in: a CUDA source compiled by the host C++ compiler.

The kernel's own text is compiled after a short shim (`SHIM`) that defines
blockIdx/threadIdx/blockDim/gridDim, ``__global__``/``__device__`` and the
intrinsics xpnet's kernels use, plus a generated launcher that runs every
(block, thread) of the grid serially: blocks in a shuffled order, threads in a
shuffled order inside each block (seeded per run, see `order_seed`). xpnet's
kernels are grid-stride loops without shared memory, atomics or __syncthreads,
so a serial launch gives the exact answer of any thread order; a kernel that
depends on one order gets a different answer here.

Each argument is marshalled as CuPy's ``cupy/cuda/function.pyx`` (``_pointer``)
and ``cupy/_core/_scalar.pyx`` (``CScalar``) do: a cupy array passes its data
pointer, a Python int passes int64 (uint64 from 2**63), a float float64, a bool
bool, a NumPy scalar its own dtype, a size-1 numpy.ndarray its bytes by value.
CuPy does not compare these with the kernel's C signature (a mismatch passes
garbage); the stand-in does, and fails on a wrong width or kind, a pointer of
the wrong element type, a non-contiguous array, an array on another device,
and grids or blocks outside CUDA's limits.
"""
import atexit
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

import numpy

SHIM = r"""
#include <cmath>
#include <cstring>
struct xp_dim3 { unsigned x, y, z; };
static xp_dim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
using std::sqrt;
static inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
#line 1
"""

# C type of a kernel parameter -> NumPy dtype of the bytes it expects
C_TYPES = {"float": "float32", "double": "float64", "int": "int32", "long long": "int64",
           "unsigned int": "uint32", "unsigned long long": "uint64", "bool": "bool",
           "short": "int16", "signed char": "int8", "unsigned char": "uint8"}

MAX_GRID = (2 ** 31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024


class LaunchError(TypeError):
    """A launch that CuPy would marshal into something the kernel does not declare."""


def order_seed():
    """The seed of the thread orders: ``XPNET_STANDIN_SEED``, else one per process."""
    return _SEED


_SEED = int(os.environ.get("XPNET_STANDIN_SEED") or numpy.random.SeedSequence().entropy % 2 ** 32)
_rng = numpy.random.default_rng(_SEED)
_lock = threading.Lock()
_libs = {}                 # sha1 of the source -> CDLL, per process
_build = {"dir": None}


def compiler():
    """The host C++ compiler (``CXX``, else g++ or c++), or None."""
    cxx = os.environ.get("CXX")
    return shutil.which(cxx) if cxx else (shutil.which("g++") or shutil.which("c++"))


def build_dir():
    """This process's folder of compiled kernels (removed at exit)."""
    if _build["dir"] is None:
        _build["dir"] = tempfile.mkdtemp(prefix="xpnet_cupy_standin_")
        atexit.register(shutil.rmtree, _build["dir"], True)
    return _build["dir"]


def parse_signature(code, name):
    """``[(c type, is pointer, declaration)]`` of kernel `name`, typedefs resolved."""
    m = re.search(r'extern\s+"C"\s+__global__\s+void\s+%s\s*\(([^)]*)\)' % re.escape(name), code)
    if m is None:
        raise LaunchError('no extern "C" __global__ kernel %r in the source' % name)
    typedefs = dict((alias, ty.strip()) for ty, alias in
                    re.findall(r"typedef\s+([\w ]+?)\s+(\w+)\s*;", code))
    params = []
    for decl in (d.strip() for d in m.group(1).split(",") if d.strip()):
        is_ptr = "*" in decl
        words = decl.replace("*", " ").replace("const", " ").replace("__restrict__", " ").split()
        ty = " ".join(words[:-1])
        ty = typedefs.get(ty, ty)
        if ty not in C_TYPES:
            raise LaunchError("kernel %s: parameter %r has a C type the stand-in does not know"
                              % (name, decl))
        params.append((ty, is_ptr, decl))
    return params


def _launcher(name, params):
    """C++ that runs `name` over a grid in a given block order and thread order."""
    calls = []
    for k, (ty, is_ptr, _) in enumerate(params):
        calls.append("*(%s%s*)a[%d]" % (ty, "*" if is_ptr else "", k))
    return """
extern "C" void xpnet_standin_launch(unsigned gx, unsigned bx, const unsigned* border,
                                     unsigned long long ta, unsigned long long tc, void** a)
{
    gridDim.x = gx; gridDim.y = gridDim.z = 1;
    blockDim.x = bx; blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    for (unsigned k = 0; k < gx; ++k) {
        blockIdx.x = border[k];
        for (unsigned long long j = 0; j < bx; ++j) {
            threadIdx.x = (unsigned)((ta * j + tc) %% bx);
            %s(%s);
        }
    }
}
""" % (name, ", ".join(calls))


def _compile(code, name, params):
    text = SHIM + code + _launcher(name, params)
    key = hashlib.sha1(text.encode()).hexdigest()[:20]
    with _lock:
        lib = _libs.get(key)
        if lib is None:
            cxx = compiler()
            if cxx is None:
                raise RuntimeError("the CuPy stand-in needs a host C++ compiler (g++ or c++; "
                                   "or set CXX)")
            d = build_dir()
            src, so = os.path.join(d, key + ".cpp"), os.path.join(d, key + ".so")
            if not os.path.exists(so):
                with open(src, "w") as fh:
                    fh.write(text)
                r = subprocess.run([cxx, "-std=c++14", "-O1", "-Wall", "-Werror", "-shared",
                                    "-fPIC", src, "-o", so + ".tmp"],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError("host compile of kernel %s failed:\n%s" % (name, r.stderr))
                os.replace(so + ".tmp", so)
            lib = _libs[key] = ctypes.CDLL(so)
    return lib


def _marshal(a, name, k, decl):
    """``(kind, dtype or None, value)`` as CuPy would pass argument `a`:
    kind 'pointer' or 'value'."""
    from ._array import ndarray
    if a is None:
        return "pointer", None, None
    if isinstance(a, ndarray):
        return "pointer", a.dtype, a
    if isinstance(a, numpy.ndarray):
        if a.size != 1:
            raise LaunchError("kernel %s argument %d (%s): a numpy.ndarray of shape %s; CuPy "
                              "refuses it (only size-one numpy arrays pass by value)"
                              % (name, k, decl, a.shape))
        return "value", a.dtype, a.reshape(())[()]
    if type(a) is bool:
        return "value", numpy.dtype("bool"), a
    if type(a) is int:
        return "value", numpy.dtype("uint64" if a >= 2 ** 63 else "int64"), a
    if type(a) is float:
        return "value", numpy.dtype("float64"), a
    if isinstance(a, numpy.generic):
        return "value", a.dtype, a
    raise LaunchError("kernel %s argument %d (%s): unsupported type %s (CuPy raises "
                      "TypeError)" % (name, k, decl, type(a).__name__))


def _dims(what, v, limits):
    if type(v) is not tuple:
        raise LaunchError("%s must be a tuple (CuPy's Function.__call__ takes tuple), got %s"
                          % (what, type(v).__name__))
    if not 1 <= len(v) <= 3 or not all(isinstance(d, (int, numpy.integer)) for d in v):
        raise LaunchError("%s must be 1 to 3 ints, got %r" % (what, v))
    v = tuple(int(d) for d in v) + (1,) * (3 - len(v))
    for d, lim in zip(v, limits):
        if not 1 <= d <= lim:
            raise LaunchError("%s %r is outside CUDA's limits %r (a 0 would be turned into 1 "
                              "by CuPy and run one block)" % (what, v, limits))
    return v


class RawKernel:
    """``cupy.RawKernel(code, name)`` run on the CPU (compiled on first launch)."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 *, enable_cooperative_groups=False, jitify=False):
        if not isinstance(code, str) or not isinstance(name, str):
            raise TypeError("RawKernel(code, name): both must be str")
        self.code, self.name, self.options = code, name, tuple(options)
        self._params = parse_signature(code, name)
        self._fn = None
        self.launches = 0
        self.last_launch = None      # (grid, block) of the latest launch

    @property
    def params(self):
        return list(self._params)

    def _check(self, args):
        from . import cuda
        if not isinstance(args, (tuple, list)):
            raise LaunchError("kernel %s: args must be a tuple or list, got %s"
                              % (self.name, type(args).__name__))
        if len(args) != len(self._params):
            raise LaunchError("kernel %s takes %d arguments, got %d"
                              % (self.name, len(self._params), len(args)))
        current = cuda.Device().id
        keep = []
        for k, (a, (ty, is_ptr, decl)) in enumerate(zip(args, self._params)):
            kind, dtype, value = _marshal(a, self.name, k, decl)
            want = numpy.dtype(C_TYPES[ty])
            if is_ptr:
                if kind != "pointer":
                    raise LaunchError("kernel %s argument %d (%s) is a pointer but CuPy would "
                                      "pass a %s by value" % (self.name, k, decl, dtype))
                if value is None:
                    slot = ctypes.c_void_p(None)
                else:
                    if dtype != want:
                        raise LaunchError("kernel %s argument %d (%s): pointer to %s, got a "
                                          "%s array" % (self.name, k, decl, ty, dtype))
                    if not value.flags.c_contiguous:
                        raise LaunchError("kernel %s argument %d (%s): the array is not "
                                          "C-contiguous (shape %s, strides %s); the kernel "
                                          "indexes it linearly"
                                          % (self.name, k, decl, value.shape, value.strides))
                    if value.device.id != current:
                        raise LaunchError("kernel %s argument %d (%s): array on device %d, "
                                          "launch on device %d"
                                          % (self.name, k, decl, value.device.id, current))
                    slot = ctypes.c_void_p(value._a.ctypes.data)
            else:
                if kind == "pointer":
                    raise LaunchError("kernel %s argument %d (%s) is a %s value but got an "
                                      "array (CuPy would pass its address)"
                                      % (self.name, k, decl, ty))
                if dtype != want:
                    raise LaunchError("kernel %s argument %d (%s) is %s (%s, %d bytes) but CuPy "
                                      "would pass %s (%d bytes) from a %s"
                                      % (self.name, k, decl, ty, want, want.itemsize, dtype,
                                         dtype.itemsize, type(a).__name__))
                slot = numpy.array(value, dtype=want)     # the bytes CuPy would pass
            keep.append(slot)
        ptrs = (ctypes.c_void_p * max(1, len(keep)))()
        for k, s in enumerate(keep):
            ptrs[k] = ctypes.addressof(s) if isinstance(s, ctypes.c_void_p) else s.ctypes.data
        return ptrs, keep

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        g = _dims("grid", grid, MAX_GRID)
        b = _dims("block", block, MAX_BLOCK)
        if b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK:
            raise LaunchError("block %r has more than %d threads" % (b, MAX_THREADS_PER_BLOCK))
        if g[1:] != (1, 1) or b[1:] != (1, 1):
            raise NotImplementedError("the stand-in runs 1-D grids and blocks only")
        if shared_mem:
            raise NotImplementedError("the stand-in has no shared memory")
        ptrs, keep = self._check(args)
        if self._fn is None:
            lib = _compile(self.code, self.name, self._params)
            self._fn = lib.xpnet_standin_launch
            self._fn.restype = None
            self._fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                 ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_void_p]
        with _lock:
            border = _rng.permutation(g[0]).astype(numpy.uint32)
            ta = int(_rng.integers(1, b[0] + 1))
            while numpy.gcd(ta, b[0]) != 1:
                ta += 1
            tc = int(_rng.integers(0, b[0]))
        self._fn(g[0], b[0], border.ctypes.data, ta, tc, ctypes.addressof(ptrs))
        self.launches += 1
        self.last_launch = (g[0], b[0])
        del keep
