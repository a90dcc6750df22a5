"""The PyTorch engine: the same checked model trained by PyTorch (CPU or CUDA), with Keras's
semantics and the NumPy engine's numbers.

    from nnc.engines.torch import TorchEngine, build   # UserError when torch is not installed

modules.py builds a TorchNet (an nn.Module, one builder per kind: TORCH_KINDS, TORCH_MERGES) whose
parameters are the Keras-layout weights, its layers standalone.py's (the torch-only classes that
`nnc export torch` copies into its files, built from layers.py's per-kind arguments); optim.py
holds nnc.training.optim's update rules on tensors, with the same checkpoint names; engine.py
runs a training step and inference. Nothing else in nnc
imports this package at module level: torch is an optional dependency (pip install 'nnc[torch]').
"""

from nnc.lang.errors import UserError

TORCH_MISSING = "the PyTorch engine needs torch: pip install 'nnc[torch]'"

try:
    import torch  # noqa: F401
except ImportError:  # the entry point of the engine: a clear error, not a traceback
    raise UserError(TORCH_MISSING) from None

from nnc.engines.torch.engine import TorchEngine, resolve_device  # noqa: E402
from nnc.engines.torch.modules import TORCH_KINDS, TORCH_MERGES, TorchNet, build  # noqa: E402
from nnc.engines.torch.optim import make_optimizer  # noqa: E402

__all__ = ["TORCH_KINDS", "TORCH_MERGES", "TorchEngine", "TorchNet", "build", "make_optimizer", "resolve_device"]
