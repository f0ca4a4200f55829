"""The PyTorch twin of an xpnet net, for the bench's ``--vs torch`` rows: a
``torch.nn.Sequential`` with the same layers and a copy of the same weights.

The translation itself lives in `xpnet.torch_io` (one implementation for the bench
and for users); this module only keeps the names the bench has always used. It must
never import PyTorch at module import: PyTorch is optional and slow to import.
"""
from ..torch_io import count_params, import_torch, to_torch

__all__ = ["import_torch", "to_torch", "torch_model", "count_params"]

torch_model = to_torch   # the name the bench has always exported
