"""`nnc summary`: a Keras-like table, plus the columns Keras lacks (MACs, activation memory)."""

from __future__ import annotations

from math import prod

from .model import Model


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def keras_shape(shape: tuple[int, ...]) -> str:
    return "(None, " + ", ".join(map(str, shape)) + ")"


def to_json(model: Model) -> dict:
    """The contract's JSON (model, layers with name/kind/output_shape/params, totals) plus extras."""
    return {
        "model": model.name,
        "input": {"name": model.input.name, "dtype": model.input.dtype, "shape": list(model.input.shape),
                  "vocab": model.input.vocab},
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "output_shape": list(layer.output_shape),
                "params": layer.params,
                "trainable_params": layer.trainable_params,
                "macs": layer.macs,
                "activation_bytes": layer.activation_bytes,
                "weights": {k: list(v) for k, v in layer.weights.items()},
            }
            for layer in model.layers
        ],
        "total_params": model.total_params,
        "trainable_params": model.trainable_params,
        "non_trainable_params": model.non_trainable_params,
        "total_macs": model.total_macs,
        "weight_bytes": 4 * model.total_params,
        "activation_bytes": sum(layer.activation_bytes for layer in model.layers),
    }


def to_text(model: Model) -> str:
    header = ("Layer (kind)", "Output Shape", "Param #", "MACs", "Activations")
    rows = [(f"{model.input.name} (input)", keras_shape(model.input.shape), "0", "0",
             human_bytes((4 if model.input.dtype == "float32" else 8) * prod(model.input.shape)))]
    for layer in model.layers:
        rows.append((f"{layer.name} ({layer.kind})", keras_shape(layer.output_shape), f"{layer.params:,}",
                     f"{layer.macs:,}", human_bytes(layer.activation_bytes)))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    widths[0] = max(widths[0], 24)

    def line(cells):
        left = cells[0].ljust(widths[0]) + "  " + cells[1].ljust(widths[1])
        right = "  ".join(c.rjust(w) for c, w in zip(cells[2:], widths[2:]))
        return left + "  " + right

    width = len(line(header))
    out = [f'Model: "{model.name}"', "━" * width, line(header), "━" * width]
    for i, row in enumerate(rows):
        out.append(line(row))
        out.append(("─" if i < len(rows) - 1 else "━") * width)
    act = sum(layer.activation_bytes for layer in model.layers)
    out += [
        f" Total params: {model.total_params:,} ({human_bytes(4 * model.total_params)})",
        f" Trainable params: {model.trainable_params:,} ({human_bytes(4 * model.trainable_params)})",
        f" Non-trainable params: {model.non_trainable_params:,} ({human_bytes(4 * model.non_trainable_params)})",
        f" MACs per sample: {model.total_macs:,}",
        f" Activation memory per sample: {human_bytes(act)} (float32, layer outputs)",
    ]
    return "\n".join(out)
