"""The NumPy backend: forward and backward kernels for every layer kind, and a Network that
runs a checked model with them (training and inference).

    from nnc.engines.numpy import Network, KERNELS
"""

from nnc.engines.numpy.kernels import KERNELS
from nnc.engines.numpy.network import Network

__all__ = ["KERNELS", "Network"]
