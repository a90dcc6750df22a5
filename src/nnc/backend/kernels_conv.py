"""NumPy forward and backward for More convolutions and spatial reshaping: separable, depthwise and transposed
convolutions, dilated, grouped and causal convolutions, upsampling, zero padding, cropping.

Same protocol as nnc.backend.kernels (read its docstring); KERNELS here is merged into its registry.
"""

from __future__ import annotations

KERNELS: dict[str, type] = {}
