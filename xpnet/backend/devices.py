"""Devices, and the registry of array-library classes.

A `Device` is an array library plus a place in it (``cpu``, ``gpu:1``,
``torch:cuda:1``, ``array-api-strict:device1``, ``jax:gpu:0``). Everything a
library needs (import, array test, device names, moves, RNG, kernels,
capabilities) lives in its `Backend` class (`xpnet.backend.base`), registered
here with `register`; this module only parses names and keeps the current
device, asking the classes. It imports no optional library until a device asks
for it, and never falls back to the CPU when another device was asked for. A
``-reference`` device keeps the library's arrays but runs xpnet's reference
kernels instead of the fast ones.
"""
import contextlib
import os
import threading

__all__ = ["Device", "DeviceError", "CPU", "get_device", "set_device", "using_device",
           "current_device", "gpu_available", "load_library", "DEVICE_HELP", "device_help",
           "register", "unregister", "registered", "backend_named"]


class DeviceError(RuntimeError):
    """The requested device can't be used (bad name, library or hardware missing), or an
    array's library has no backend class."""


# ---------------------------------------------------------------- the registry

_registry = {}          # name -> Backend instance, in registration order
_generic = {}           # libraries met through array-api-compat with no class of their own
_on_change = []         # caches to drop when the registry changes (arrays.py's type table)


def register(cls):
    """Register array-library class `cls` (a subclass of `xpnet.backend.base.Backend`);
    usable as a class decorator. A class registered later is asked first whether it
    owns an array, so a subclass may claim a subtype; registering a name again
    replaces the earlier class."""
    inst = cls()
    if not inst.name or not inst.kind:
        raise TypeError("register: %s must set `name` and `kind`" % cls.__name__)
    _registry.pop(inst.name, None)
    _registry[inst.name] = inst
    _changed()
    return cls


def unregister(name):
    """Remove the class registered as `name` (tests; returns it, or None)."""
    inst = _registry.pop(name, None)
    _changed()
    return inst


_kinds = {}


def _changed():
    global DEVICE_HELP
    DEVICE_HELP = device_help()
    _kinds.clear()
    for clear in _on_change:
        clear()


def registered():
    """The registered backend instances, latest first (the order arrays are matched in)."""
    return list(reversed(_registry.values()))


def backend_named(name):
    """The backend instance of library `name` (registered, or generic)."""
    b = _registry.get(name) or _generic.get(name)
    if b is None:
        raise DeviceError("no array library %r is registered; registered: %s"
                          % (name, ", ".join(_registry)))
    return b


def _by_kind(kind):
    b = _kinds.get(kind)              # asked for every Device made (device_of: every layer call)
    if b is not None:
        return b
    for b in registered():
        if kind == b.kind or kind == b.name:
            _kinds[kind] = b
            return b
    if kind in _generic:
        return _generic[kind]
    raise DeviceError("device kind must be one of %s, got %r"
                      % (", ".join(b.kind for b in _registry.values()), kind))


def device_help():
    """The device names every registered library accepts, for help texts and errors."""
    parts = ["auto"] + [b.help for b in _registry.values() if b.help]
    return ", ".join(parts)


DEVICE_HELP = device_help()


def load_library(library, required=True):
    """The module of `library` (a backend name such as ``'torch'``), imported on first
    use; None (or DeviceError if `required`) when it can't be imported."""
    return backend_named(library).load(required)


def gpu_available():
    """``(True, '')`` if a GPU library with an ``auto`` rank (CuPy) can use a device,
    else ``(False, reason)``."""
    why = "no registered library drives a GPU"
    for b in sorted((b for b in _registry.values() if b.auto), key=lambda b: -b.auto):
        ok, why = b.available()
        if ok:
            return True, ""
    return False, why


# ---------------------------------------------------------------- devices

class Device:
    """A place arrays live. ``Device('cpu')``, ``Device('gpu', 1)``,
    ``Device('torch', 0, type='cuda')``, ``Device('array-api-strict', 1)``; add
    ``reference=True`` for the reference kernels. `get_device` parses names."""

    __slots__ = ("library", "type", "id", "reference")

    def __init__(self, kind, id=0, reference=False, type=None):
        b = _by_kind(kind)
        self.library = b.name
        self.type, self.id = b.place(type, id)
        self.reference = bool(reference)

    @property
    def backend(self):
        """The `Backend` instance of this device's library."""
        return backend_named(self.library)

    @property
    def kind(self):
        """``'cpu'`` (NumPy), ``'gpu'`` (CuPy), ``'torch'``, ``'array-api-strict'``, ``'jax'`` ..."""
        return self.backend.kind

    @property
    def xp(self):
        """The library's own module (numpy, cupy, torch, array_api_strict, jax.numpy ...)."""
        return self.backend.load()

    @property
    def namespace(self):
        """The library's Array API namespace (what `xpnet.namespace` gives for its arrays)."""
        return self.backend.namespace()

    @property
    def native(self):
        """This device as its own library names it (for ``device=`` arguments)."""
        return self.backend.native(self)

    @property
    def dtypes(self):
        """The dtype names ('float32', 'float64', 'int64', ...) this device can hold."""
        return self.backend.dtypes(self)

    @property
    def mutable(self):
        """True when its arrays can be written in place (False for JAX)."""
        return self.backend.mutable

    def for_rank(self, local_rank):
        """The device of the same kind for distributed rank `local_rank` on this host
        (rank r gets index r: ``gpu:r``, ``torch:cuda:r``, ``array-api-strict:device{r+1}``)."""
        return self.backend.rank_device(self, int(local_rank))

    @property
    def name(self):
        return self.backend.device_name(self)

    def __eq__(self, other):
        return isinstance(other, Device) and self._key() == other._key()

    def _key(self):
        return (self.library, self.type, self.id, self.reference)

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Device(%r)" % self.name

    def __str__(self):
        return self.name


CPU = None   # Device('cpu'), set once the NumPy class is registered (xpnet.backend)


def _parse(spec):
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return current_device()
    if not isinstance(spec, str):
        raise DeviceError("device must be a str such as %s, got %r" % (device_help(), spec))
    s = spec.strip().lower()
    head, _, rest = s.partition(":")
    reference = head.endswith("-reference")
    head = head[:-len("-reference")] if reference else head
    if head == "auto" and not rest and not reference:
        return _auto()
    for b in registered():
        if head == b.kind or head in b.heads:
            return b.parse(spec, rest, reference)
    raise DeviceError("unknown device %r; valid values are %s" % (spec, device_help()))


def _auto():
    for b in sorted((b for b in _registry.values() if b.auto), key=lambda b: -b.auto):
        if b.available()[0]:
            return b.parse("auto", "", False)
    return CPU


_default = None   # resolved lazily from XPNET_DEVICE
_local = threading.local()


def get_device(spec=None):
    """Resolve a device name (see `DEVICE_HELP`), a `Device`, or None (the current one)."""
    return _parse(spec)


def current_device():
    """The device new nets and arrays go to: innermost `using_device`, else `set_device`,
    else ``XPNET_DEVICE``."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    global _default
    if _default is None:
        env = os.environ.get("XPNET_DEVICE", "cpu") or "cpu"
        try:
            _default = _parse(env)
        except DeviceError as e:
            raise DeviceError("XPNET_DEVICE=%r: %s" % (env, e)) from None
    return _default


def set_device(spec):
    """Set the process-wide default device; returns the resolved `Device`."""
    global _default
    _default = _parse(spec)
    return _default


@contextlib.contextmanager
def using_device(spec):
    """``with xpnet.using_device('gpu'): ...``: a temporary default device (per thread)."""
    dev = _parse(spec)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(dev)
    try:
        with dev.backend.scope(dev):
            yield dev
    finally:
        stack.pop()
