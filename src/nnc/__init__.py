"""nnc: a compiler for neural-network specs.

    >>> import nnc
    >>> result = nnc.check("specs/mnist_convnet.nnspec")   # never raises for a bad spec
    >>> result.ok, [str(d.message) for d in result.diagnostics]
    >>> model = nnc.load("specs/mnist_convnet.nnspec")     # raises nnc.SpecError if it has errors
    >>> model.total_params, model.output_shape, [l.name for l in model.layers]
    >>> h = nnc.fit(model, x, y, validation_data=(x_val, y_val), epochs=5)   # nnc train's loop, on arrays
    >>> h.history["val_loss"], nnc.predict(model, x_test, weights=h), nnc.evaluate(model, x_test, y_test, weights=h)
"""

from __future__ import annotations

__version__ = "0.1.0"

from nnc.lang.checker import check_file as check, check_source
from nnc.lang.diagnostics import CODES, Diagnostic, Span, render
from nnc.lang.errors import SpecError, UserError
from nnc.lang.model import CheckResult, InputSpec, Layer, Model, TrainConfig


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


_API = ("fit", "evaluate", "predict", "History", "Callback")  # nnc.training.api, imported when first used (numpy)


def __getattr__(name: str):
    if name in _API:
        from nnc.training import api

        return getattr(api, name)
    raise AttributeError(f"module 'nnc' has no attribute {name!r}")


__all__ = [
    "CODES", "Callback", "CheckResult", "Diagnostic", "History", "InputSpec", "Layer", "Model", "Span", "SpecError",
    "TrainConfig", "UserError", "check", "check_source", "evaluate", "fit", "load", "loads", "predict", "render",
    "__version__",
]
