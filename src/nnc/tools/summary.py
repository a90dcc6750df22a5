"""`nnc summary`: a Keras-like table, plus the columns Keras lacks (MACs, activation memory)."""

from __future__ import annotations

from math import prod

from nnc.lang.model import Block, Layer, Model, Node

SUMMARY_SCHEMA_VERSION = 1
"""The version of `to_json`'s schema (`nnc schema summary`); fields are only ever added within one."""


def blocks(nodes: list[Node]) -> list[Block]:
    """Every block of a tree, outer before inner, in reading order."""
    out: list[Block] = []
    for node in nodes:
        if isinstance(node, Block):
            out.append(node)
            for branch in node.branches:
                out += blocks(branch)
    return out


def block_bytes(block: Block) -> int:
    """The activation memory of a block's own output: a merge makes a tensor, a repeat does not."""
    return 0 if block.kind == "repeat" else 4 * prod(block.output_shape)


def activation_bytes(model: Model) -> int:
    """Every layer's output and every merge's, per sample, in float32."""
    return sum(layer.activation_bytes for layer in model.layers) + sum(block_bytes(b) for b in blocks(model.body))


def node_json(node: Node) -> dict:
    """One step of the body tree: a layer, or a block with its branches (each a list of steps)."""
    if isinstance(node, Layer):
        return {"name": node.name, "kind": node.kind, "output_shape": list(node.output_shape), "params": node.params}
    return {"name": node.name, "kind": node.kind, "output_shape": list(node.output_shape), "params": node.params,
            "input_shape": list(node.input_shape), "options": dict(node.options),
            "branches": [[node_json(n) for n in branch] for branch in node.branches]}


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n:,} {unit}"
            return f"{n:,.1f} {unit}" if isinstance(n, float) else f"{n:,}.0 {unit}"
        n = n / 1024 if n < 2 ** 1000 else n // 1024  # a huge int would overflow a float
    raise AssertionError  # pragma: no cover


def keras_shape(shape: tuple[int, ...]) -> str:
    return "(None, " + ", ".join(map(str, shape)) + ")"


def to_json(model: Model) -> dict:
    """The contract's JSON (model, layers with name/kind/output_shape/params, totals) plus extras."""
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
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
        "activation_bytes": activation_bytes(model),
        "body": [node_json(node) for node in model.body],
    }


def _rows(nodes: list[Node], indent: str, rows: list, tops: list) -> None:
    """Table rows of a stack: a block's row (its output shape and the params of all inside), then
    its layers indented under it; a merge's branches are labelled `branch N`, an empty branch is
    the block's input."""
    for node in nodes:
        if not indent:
            tops.append(len(rows))
        if isinstance(node, Layer):
            rows.append((f"{indent}{node.name} ({node.kind})", keras_shape(node.output_shape), f"{node.params:,}",
                         f"{node.macs:,}", human_bytes(node.activation_bytes)))
            continue
        macs = sum(layer.macs for layer in node.layers())
        what = {"residual": "residual: input + body", "repeat": f"repeat ×{node.options.get('times', 1)}"}.get(
            node.kind, node.kind if node.kind != "concat" else f"concat axis={node.options.get('axis', -1)}")
        rows.append((f"{indent}{node.name} ({what})", keras_shape(node.output_shape), f"{node.params:,}",
                     f"{macs:,}", human_bytes(block_bytes(node)) if node.kind != "repeat" else ""))
        if node.kind in ("residual", "repeat"):
            _rows(node.branches[-1], indent + "  ", rows, tops)
            continue
        for i, branch in enumerate(node.branches, 1):
            rows.append((f"{indent}  branch {i}" + ("" if branch else ": the block's input"), "", "", "", ""))
            _rows(branch, indent + "    ", rows, tops)


def to_text(model: Model) -> str:
    header = ("Layer (kind)", "Output Shape", "Param #", "MACs", "Activations")
    rows = [(f"{model.input.name} (input)", keras_shape(model.input.shape), "0", "0",
             human_bytes((4 if model.input.dtype == "float32" else 8) * prod(model.input.shape)))]
    tops = [len(rows)]  # the rows that start a top-level step: a rule is drawn above each
    _rows(model.body, "", rows, tops)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    widths[0] = max(widths[0], 24)

    def line(cells):
        left = cells[0].ljust(widths[0]) + "  " + cells[1].ljust(widths[1])
        right = "  ".join(c.rjust(w) for c, w in zip(cells[2:], widths[2:]))
        return left + "  " + right

    width = len(line(header))
    out = [f'Model: "{model.name}"', "━" * width, line(header), "━" * width]
    starts = set(tops)
    for i, row in enumerate(rows):
        out.append(line(row).rstrip() if not row[1] else line(row))
        if i + 1 in starts or i == len(rows) - 1:
            out.append(("─" if i < len(rows) - 1 else "━") * width)
    act = activation_bytes(model)
    out += [
        f" Total params: {model.total_params:,} ({human_bytes(4 * model.total_params)})",
        f" Trainable params: {model.trainable_params:,} ({human_bytes(4 * model.trainable_params)})",
        f" Non-trainable params: {model.non_trainable_params:,} ({human_bytes(4 * model.non_trainable_params)})",
        f" MACs per sample: {model.total_macs:,}",
        f" Activation memory per sample: {human_bytes(act)} (float32, layer"
        f"{' and merge' if blocks(model.body) else ''} outputs)",
    ]
    return "\n".join(out)
