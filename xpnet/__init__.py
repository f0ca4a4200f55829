"""xpnet: the networks of "Deep Learning from Scratch", one code path for every array library."""
from . import _command_start  # noqa: F401  (first: Ctrl-C while `xpnet` starts)
from .version import __version__

from .backend import (CPU, Device, DeviceError, asnumpy, current_device, device_of,
                      get_array_module, get_device, gpu_available, namespace, seed, set_device,
                      synchronize, to_device, using_device)
from . import backend, functions, layers, optimizers, conv
from .backend.cpu_threads import get_num_threads, set_num_threads
from .layers import (Affine, AvgPooling, BatchNormalization, Convolution, Dropout, Flatten,
                     IdentityWithLoss, LeakyRelu, Pooling, Relu, Sigmoid, SoftmaxWithLoss, Tanh)
from .optimizers import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, RMSprop, get_optimizer
from .nets import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, Sequential, SimpleConvNet,
                   TwoLayerNet, build_net, load_net)
from . import explain
from .compile import compile_step

__all__ = [
    "__version__", "CPU", "Device", "DeviceError", "asnumpy", "current_device", "device_of",
    "get_array_module", "get_device", "gpu_available", "namespace", "seed", "set_device",
    "synchronize", "to_device", "using_device", "backend", "functions", "layers", "optimizers",
    "conv", "get_num_threads", "set_num_threads",
    "Affine", "AvgPooling", "BatchNormalization", "Convolution", "Dropout", "Flatten",
    "IdentityWithLoss", "LeakyRelu", "Pooling", "Relu", "Sigmoid", "SoftmaxWithLoss", "Tanh",
    "SGD", "AdaGrad", "Adam", "AdamW", "Momentum", "Nesterov", "RMSprop", "get_optimizer",
    "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "Sequential", "SimpleConvNet",
    "TwoLayerNet", "build_net", "load_net", "explain", "compile_step",
]
