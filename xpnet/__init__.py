"""xpnet: the networks of "Deep Learning from Scratch", one code path for NumPy and CuPy."""
__version__ = "0.1.0"

from .backend import (CPU, Device, DeviceError, asnumpy, current_device, get_array_module,
                      get_device, gpu_available, seed, set_device, synchronize, to_device,
                      using_device)
from . import functions, layers, optimizers, conv
from .backend import cpu_threads as parallel
from .backend.cpu_threads import get_num_threads, set_num_threads
from .layers import (Affine, AvgPooling, BatchNormalization, Convolution, Dropout, Flatten,
                     IdentityWithLoss, Pooling, Relu, Sigmoid, SoftmaxWithLoss, Tanh)
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop, get_optimizer
from .nets import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, Sequential, SimpleConvNet,
                   TwoLayerNet, build_net)
from .serialization import load_net

__all__ = [
    "__version__", "CPU", "Device", "DeviceError", "asnumpy", "current_device",
    "get_array_module", "get_device", "gpu_available", "seed", "set_device", "synchronize",
    "to_device", "using_device", "functions", "layers", "optimizers", "conv", "parallel",
    "get_num_threads", "set_num_threads",
    "Affine", "AvgPooling", "BatchNormalization", "Convolution", "Dropout", "Flatten",
    "IdentityWithLoss", "Pooling", "Relu", "Sigmoid", "SoftmaxWithLoss", "Tanh",
    "SGD", "AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "get_optimizer",
    "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "Sequential", "SimpleConvNet",
    "TwoLayerNet", "build_net", "load_net",
]
