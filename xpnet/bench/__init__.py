"""`xpnet bench`: time a training step and inference of the book's nets on any xpnet
device, optionally against the same architecture in PyTorch measured in the same run.

    python -m xpnet.bench --vs torch
    python -m xpnet.bench --device gpu --models DeepConvNet --batch-sizes 100 --json
    python -m xpnet.bench --device numpy-reference --quick    # without the fast paths

Parts: `runner` (what is timed; models from `xpnet.registry`), `timing` (statistics,
interleaved ABBA timing, memory readings), `torch_twin` (`to_torch`: the PyTorch
copy of a net), `report` (environment, table, JSON), `command` (the options).

This package is host-side measuring code outside xpnet's core: ``import xpnet``
must never import it, and it must never import PyTorch unless asked (``--vs
torch`` or `to_torch`).
"""
from .command import DESCRIPTION, add_arguments, main, run_from_args
from .report import collect_environment, format_table
from .runner import (ADAM, DEFAULT_BATCH_SIZES, DEFAULT_INFER_BATCH, INPUT_SHAPE, MODELS,
                     N_CLASSES, run_bench)
from .torch_twin import count_params, to_torch, torch_model

__all__ = ["MODELS", "run_bench", "collect_environment", "format_table", "to_torch",
           "torch_model", "count_params", "add_arguments", "run_from_args", "main",
           "DESCRIPTION", "ADAM", "INPUT_SHAPE", "N_CLASSES", "DEFAULT_BATCH_SIZES",
           "DEFAULT_INFER_BATCH"]
