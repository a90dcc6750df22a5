"""nnc: a compiler for neural-network specs.

    >>> import nnc
    >>> result = nnc.check("specs/mnist_convnet.nnspec")   # never raises for a bad spec
    >>> result.ok, [str(d.message) for d in result.diagnostics]
    >>> model = nnc.load("specs/mnist_convnet.nnspec")     # raises nnc.SpecError if it has errors
    >>> model.total_params, model.output_shape, [l.name for l in model.layers]
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checker import check_file as check, check_source
from .diagnostics import CODES, Diagnostic, Span, render
from .errors import SpecError, UserError
from .model import CheckResult, InputSpec, Layer, Model, TrainConfig


def load(path: str) -> Model:
    """Check a spec file and return its model; raise SpecError (with all diagnostics) if it has errors."""
    result = check(path)
    if not result.ok:
        raise SpecError(result)
    return result.model


def loads(text: str, file: str = "<string>") -> Model:
    """As `load`, from the text of a spec."""
    result = check_source(text, file)
    if not result.ok:
        raise SpecError(result)
    return result.model


__all__ = [
    "CODES", "CheckResult", "Diagnostic", "InputSpec", "Layer", "Model", "Span", "SpecError", "TrainConfig",
    "UserError", "check", "check_source", "load", "loads", "render", "__version__",
]
