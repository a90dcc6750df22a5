"""The NumPy backend: forward and backward kernels for every layer kind, and a Network that
runs a checked model with them (training and inference).

    from nnc.backend import Network, KERNELS
"""

from .kernels import KERNELS
from .network import Network

__all__ = ["KERNELS", "Network"]
