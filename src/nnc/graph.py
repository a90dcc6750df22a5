"""A diagram of a checked model: what `nnc graph` draws.

The input on top, then one box a layer, joined by arrows: each box says the layer's name
and kind, its key options ("32 filters 3×3, relu"), its output shape and its parameter
count. PNG and SVG are drawn with matplotlib (a dependency already), so no system Graphviz
is needed; `.dot` writes Graphviz text for those who have it.
"""

from __future__ import annotations

from .model import Layer, Model

FORMATS = ("svg", "png", "dot")

# (fill, edge) by family of kinds: a reader tells convolutions from dense layers at a glance
_COLORS = {
    "input": ("#eceff1", "#455a64"),
    "conv": ("#e3f2fd", "#1565c0"),
    "pool": ("#e0f2f1", "#00796b"),
    "dense": ("#fff3e0", "#e65100"),
    "recurrent": ("#f3e5f5", "#6a1b9a"),
    "embedding": ("#e8f5e9", "#2e7d32"),
    "other": ("#f5f5f5", "#616161"),
}
_FAMILY = {
    "conv1d": "conv", "conv2d": "conv",
    "maxpool1d": "pool", "maxpool2d": "pool", "avgpool1d": "pool", "avgpool2d": "pool",
    "globalmaxpool": "pool", "globalavgpool": "pool",
    "dense": "dense", "rnn": "recurrent", "lstm": "recurrent", "gru": "recurrent", "embedding": "embedding",
}


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def _size(s) -> str:
    return "×".join(str(d) for d in s) if isinstance(s, (tuple, list)) else str(s)


def _num(x: float) -> str:
    return f"{x:g}"


def key_options(layer: Layer) -> str:
    """The options a reader needs, in words: `32 filters 3×3, relu`, `2×2 pool`, `64 units`."""
    o, k = layer.options, layer.kind
    parts: list[str] = []
    if k in ("conv1d", "conv2d"):
        parts.append(f"{o['filters']} filters {_size(o['kernel'])}")
        if any(s != 1 for s in o["stride"]):
            parts.append(f"stride {_size(o['stride'])}")
        if o["padding"] == "same":
            parts.append("same padding")
        if o["activation"] != "linear":
            parts.append(o["activation"])
        if not o["use_bias"]:
            parts.append("no bias")
    elif k in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
        parts.append(f"{'max' if k.startswith('max') else 'average'} pool {_size(o['pool'])}")
        if o.get("stride") is not None and tuple(o["stride"]) != tuple(o["pool"]):
            parts.append(f"stride {_size(o['stride'])}")
        if o["padding"] == "same":
            parts.append("same padding")
    elif k in ("globalmaxpool", "globalavgpool"):
        parts.append(("max" if "max" in k else "average") + " over all positions")
    elif k == "flatten":
        parts.append("to one vector")
    elif k == "dense":
        parts.append(f"{o['units']} unit{'s' if o['units'] != 1 else ''}")
        if o["activation"] != "linear":
            parts.append(o["activation"])
        if not o["use_bias"]:
            parts.append("no bias")
    elif k == "dropout":
        parts.append(f"rate {_num(o['rate'])}")
    elif k == "embedding":
        parts.append(f"{o['vocab']:,} ids → {o['dim']}-d vectors")
    elif k in ("rnn", "lstm", "gru"):
        parts.append(f"{o['units']} unit{'s' if o['units'] != 1 else ''}")
        if k == "rnn" and o.get("activation", "tanh") != "tanh":
            parts.append(o["activation"])
        if k == "gru" and not o.get("reset_after", True):
            parts.append("reset_after=false")
        if o.get("return_sequences"):
            parts.append("all steps")
    return ", ".join(parts)


def _title(layer: Layer) -> str:
    return f"{layer.name} ({layer.kind})"


def _params(n: int) -> str:
    return f"{n:,} param{'s' if n != 1 else ''}"


def _input_options(model: Model) -> str:
    inp = model.input
    return inp.dtype + (f", vocab {inp.vocab:,}" if inp.vocab is not None else "")


def boxes(model: Model) -> list[dict]:
    """What each box says, input first: title, options, shape, params, family."""
    out = [{"title": f"{model.input.name} (input)", "options": _input_options(model),
            "shape": shape_text(model.input.shape), "params": "", "family": "input"}]
    for layer in model.layers:
        out.append({"title": _title(layer), "options": key_options(layer), "shape": shape_text(layer.output_shape),
                    "params": _params(layer.params), "family": _FAMILY.get(layer.kind, "other")})
    return out


# --- Graphviz text --------------------------------------------------------------------------


def _dot_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(model: Model) -> str:
    lines = [
        f"digraph {_dot_string(model.name)} {{",
        f"  label={_dot_string(f'{model.name}: {model.total_params:,} parameters')};",
        '  labelloc="t";',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for i, b in enumerate(boxes(model)):
        fill, edge = _COLORS[b["family"]]
        text = "\n".join(t for t in (b["title"], b["options"], " · ".join(x for x in (b["shape"], b["params"]) if x)) if t)
        lines.append(f"  n{i} [label={_dot_string(text)}, fillcolor={_dot_string(fill)}, color={_dot_string(edge)}];")
    n = len(model.layers) + 1
    lines += [f"  n{i} -> n{i + 1};" for i in range(n - 1)]
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- matplotlib -----------------------------------------------------------------------------


def figure(model: Model):
    """A matplotlib Figure of the model (no pyplot, so no GUI backend and no global state)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    items = boxes(model)
    n = len(items)
    box_h = 0.78 if n <= 12 else 0.66  # inches; long models get slightly tighter boxes
    gap = 0.34 if n <= 12 else 0.26
    width, box_w, left = 6.4, 5.6, 0.4
    head = 0.9
    height = head + n * box_h + (n - 1) * gap + 0.3
    fig = Figure(figsize=(width, height), dpi=110)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards: the input on top
    ax.axis("off")
    ax.text(width / 2, 0.38, model.name, ha="center", va="center", fontsize=14, fontweight="bold", color="#212121")
    ax.text(width / 2, 0.68, f"{model.total_params:,} parameters · input {shape_text(model.input.shape)} → "
            f"output {shape_text(model.output_shape)}", ha="center", va="center", fontsize=9, color="#616161")
    for i, b in enumerate(items):
        top = head + i * (box_h + gap)
        fill, edge = _COLORS[b["family"]]
        ax.add_patch(FancyBboxPatch((left, top), box_w, box_h, boxstyle="round,pad=0,rounding_size=0.08",
                                    linewidth=1.4, edgecolor=edge, facecolor=fill))
        ax.add_patch(FancyBboxPatch((left, top), 0.09, box_h, boxstyle="round,pad=0,rounding_size=0.04",
                                    linewidth=0, facecolor=edge))  # a coloured stripe marks the family
        y1, y2 = top + box_h * 0.34, top + box_h * 0.70
        ax.text(left + 0.25, y1 if b["options"] else top + box_h / 2, b["title"], ha="left", va="center",
                fontsize=10.5, fontweight="bold", color="#212121")
        small = 9.5 if len(b["options"]) <= 44 else 8.5  # long option lists must not reach the params
        ax.text(left + 0.25, y2, b["options"], ha="left", va="center", fontsize=small, color="#424242")
        ax.text(left + box_w - 0.18, y1, b["shape"], ha="right", va="center", fontsize=10.5, color=edge,
                family="monospace", fontweight="bold")
        ax.text(left + box_w - 0.18, y2, b["params"], ha="right", va="center", fontsize=9.5, color="#424242")
        if i < n - 1:
            ax.add_patch(FancyArrowPatch((width / 2, top + box_h + 0.02), (width / 2, top + box_h + gap - 0.02),
                                         arrowstyle="-|>", mutation_scale=12, linewidth=1.3, color="#757575"))
    return fig


def render(model: Model, fmt: str) -> bytes:
    """The diagram as bytes in `fmt` (svg, png or dot)."""
    if fmt == "dot":
        return to_dot(model).encode("utf-8")
    import io

    fig = figure(model)
    buf = io.BytesIO()
    # no dates or software versions in the file: the same spec draws the same bytes
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "nnc", "svg.fonttype": "path"}):
        fig.savefig(buf, format=fmt, metadata=metadata, facecolor="white")
    return buf.getvalue()
