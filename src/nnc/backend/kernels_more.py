"""NumPy forward and backward for Normalization, reshaping, spatial dropout, attention, position embeddings and the
activation layers with options (leaky_relu, elu, prelu).

Same protocol as nnc.backend.kernels (read its docstring); KERNELS here is merged into its registry.
"""

from __future__ import annotations

KERNELS: dict[str, type] = {}
