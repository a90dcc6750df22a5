"""What a train block's metrics may be: their names and Keras's aliases, which grow better as they
rise, and which fit a loss and a model's output (misfit). The checker reads these; the metrics that
compute are nnc.training.metrics (its docstring has each metric's Keras semantics)."""

from __future__ import annotations

METRICS = ("accuracy", "mae", "mse", "auc", "precision", "recall", "top_k_accuracy")
METRIC_ALIASES = {"acc": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse",
                  "top_k_categorical_accuracy": "top_k_accuracy",
                  "sparse_top_k_categorical_accuracy": "top_k_accuracy"}
# the metrics Keras marks _direction = "up": early stopping's mode "auto" maximizes them
MAXIMIZED = ("accuracy", "auc", "precision", "recall", "top_k_accuracy")
CATEGORICAL = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def maximized(key: str) -> bool:
    """Whether a history key (`val_auc`, `loss`, ...) gets better as it grows (Keras's 'auto')."""
    return key.removeprefix("val_") in MAXIMIZED


def misfit(name: str, loss: str, output_shape: tuple[int, ...], activation: str | None,
           k: int = 5) -> tuple[str, str | None] | None:
    """(message, help) when metric `name` does not fit the loss and the model's output; None if it fits."""
    units = output_shape[-1] if output_shape else 1
    if name in ("mae", "mse") and loss == "sparse_categorical_crossentropy":
        return (f"{name} compares targets with the model's outputs, but sparse_categorical_crossentropy's "
                f"labels are class ids", "use accuracy, or categorical_crossentropy with one-hot targets")
    if name in ("auc", "precision", "recall"):
        if loss == "sparse_categorical_crossentropy":
            return (f"{name} compares 0/1 targets with probabilities output by output (as Keras's does), but "
                    f"sparse_categorical_crossentropy's labels are class ids",
                    "use binary_crossentropy with dense 1 activation=sigmoid, or categorical_crossentropy with "
                    "one-hot targets")
        if activation not in ("sigmoid", "softmax"):
            return (f"{name} needs probabilities, but the model ends in "
                    f"{activation if activation not in (None, 'linear') else 'a linear output'}",
                    "end the model with activation=sigmoid (or softmax)")
    if name == "top_k_accuracy":
        if loss not in CATEGORICAL or units < 2:
            what = f"loss {loss}" if loss not in CATEGORICAL else "a model with 1 output"
            return (f"top_k_accuracy ranks classes: it needs one output per class and "
                    f"sparse_categorical_crossentropy or categorical_crossentropy, not {what}",
                    "for a binary output use accuracy, auc, precision or recall")
        if not 1 <= k <= units:
            return (f"top_k_accuracy k={k}, but the model has {units} classes", f"k is 1 to {units}")
    return None


def class_weight_misfit(loss: str, output_shape: tuple[int, ...], n: int) -> tuple[str, str | None, int] | None:
    """(message, help, index of the first weight too many or -1) when `n` class weights do not fit
    the loss and the model's output; None if they do. Keras's class_weight_to_sample_weights takes
    one class per sample: a sparse label, the argmax of a one-hot target, a single sigmoid target."""
    units = output_shape[-1] if output_shape else 1
    if loss not in CATEGORICAL + ("binary_crossentropy",):
        return (f"class_weight weighs the samples of each class, but loss {loss} has no classes",
                "class_weight goes with sparse_categorical_crossentropy, categorical_crossentropy or "
                "binary_crossentropy", -1)
    if len(output_shape) != 1:
        return (f"class_weight needs one class per sample, but the model outputs "
                f"{'x'.join(map(str, output_shape))} (a class per position)",
                "Keras's class_weight takes the class of each sample; it has no per-position form", -1)
    if loss == "binary_crossentropy" and units != 1:
        return (f"class_weight with binary_crossentropy needs one sigmoid output (classes 0 and 1), but the model "
                f"has {units} outputs (independent yes/no labels)", None, -1)
    classes = 2 if loss == "binary_crossentropy" else units
    if n > classes:
        return (f"class_weight gives a weight to class {classes}, but the model has {classes} classes "
                f"(ids 0 to {classes - 1})", None, classes)
    if n < classes:
        return (f"class_weight gives {n} weight{'s' if n != 1 else ''}, but the model has {classes} classes: one "
                f"weight per class id, in order", f"for example: class_weight {' '.join(['1.0'] * classes)}", -1)
    return None
