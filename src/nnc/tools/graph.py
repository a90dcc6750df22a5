"""A diagram of a checked model: what `nnc graph` draws.

The input on top, then one box a layer, joined by arrows: each box says the layer's name
and kind, its key options ("32 filters 3×3, relu"), its output shape and its parameter
count. PNG and SVG are drawn with matplotlib (a dependency already), so no system Graphviz
is needed; `.dot` writes Graphviz text for those who have it. A model with blocks is laid out
as a tree (`tree_layout`): a merge's branches side by side, joined by the merge's box, each
block in a labelled frame.
"""

from __future__ import annotations

from nnc.lang.kinds import KINDS
from nnc.lang.model import Block, Layer, Model

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
_CONV_KINDS = ("conv1d", "conv2d", "separable_conv1d", "separable_conv2d", "depthwise_conv1d", "depthwise_conv2d",
               "conv1d_transpose", "conv2d_transpose")
_FAMILY = {
    **{k: "conv" for k in _CONV_KINDS},
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
    if k in _CONV_KINDS:
        what = f"{o['filters']} filters " if "filters" in o else "depthwise "
        parts.append(f"{what}{_size(o['kernel'])}")
        if any(s != 1 for s in o["stride"]):
            parts.append(f"stride {_size(o['stride'])}")
        if any(d != 1 for d in o.get("dilation", (1,))):
            parts.append(f"dilation {_size(o['dilation'])}")
        if o.get("groups", 1) != 1:
            parts.append(f"{o['groups']} groups")
        if o.get("depth_multiplier", 1) != 1:
            parts.append(f"depth multiplier {o['depth_multiplier']}")
        if o["padding"] in ("same", "causal"):
            parts.append(f"{o['padding']} padding")
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
        if o.get("bidirectional"):
            parts.append(f"bidirectional ({o['merge']})")
    elif k in KINDS:  # the newer kinds: the options that differ from Keras's defaults
        for opt in KINDS[k].options:
            v = o.get(opt.name)
            if v is not None and (opt.required or opt.name in KINDS[k].positional or v != opt.default):
                parts.append(f"{opt.name}={_opt_text(opt, v)}")
    return ", ".join(parts)


def _opt_text(opt, v) -> str:
    """A value as the spec writes it: true, [4, 12], [1, 0, 2, 3], 2×3."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        flat = [x for d in v for x in (d if isinstance(d, (tuple, list)) else (d,))]
        return _size(v) if opt.type.startswith("size") else "[" + ", ".join(map(str, flat)) + "]"
    return _num(v) if isinstance(v, float) else str(v)


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


def _dot_header(model: Model) -> list[str]:
    return [
        f"digraph {_dot_string(model.name)} {{",
        f"  label={_dot_string(f'{model.name}: {model.total_params:,} parameters')};",
        '  labelloc="t";',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]


def to_dot(model: Model) -> str:
    if has_blocks(model):
        return _tree_dot(model)
    lines = _dot_header(model)
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
    if has_blocks(model):
        return _tree_figure(model)
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
    from matplotlib.text import Text

    for t in fig.findobj(Text):  # a 1,000,000-letter name would take matplotlib hours to lay out
        if len(t.get_text()) > 200:
            t.set_text(t.get_text()[:199] + "…")
    buf = io.BytesIO()
    # no dates or software versions in the file: the same spec draws the same bytes
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "nnc", "svg.fonttype": "path"}):
        fig.savefig(buf, format=fmt, metadata=metadata, facecolor="white")
    return buf.getvalue()


# --- models with blocks: branches side by side ---------------------------------------------

_MERGE_COLORS = ("#fce4ec", "#ad1457")
_MERGE_WORDS = {"add": "add", "residual": "add: x + body(x)", "concat": "concatenate", "multiply": "multiply",
                "average": "average", "maximum": "maximum", "minimum": "minimum", "subtract": "subtract: 1st − 2nd"}


def has_blocks(model: Model) -> bool:
    return any(isinstance(node, Block) for node in model.body)


def _merge_box(block: Block) -> dict:
    words = _MERGE_WORDS[block.kind]
    if block.kind == "concat":
        words += f" on axis {block.options.get('axis', -1)}"
    return {"title": f"{block.name} ({block.kind})", "options": words, "shape": shape_text(block.output_shape),
            "params": f"block: {_params(block.params)}", "family": "merge"}


def _layer_box(layer: Layer) -> dict:
    return {"title": _title(layer), "options": key_options(layer), "shape": shape_text(layer.output_shape),
            "params": _params(layer.params), "family": _FAMILY.get(layer.kind, "other")}


_LABEL = 0.45  # rows a block's frame label takes
_EMPTY_W = 0.45  # columns an empty branch (the block's input) takes


def _measure(nodes: list) -> tuple[float, float]:
    """(columns, rows) a stack takes."""
    w, h = 1.0, 0.0
    for node in nodes:
        nw, nh = _measure_node(node)
        w, h = max(w, nw), h + nh
    return w, h


def _measure_node(node) -> tuple[float, float]:
    if isinstance(node, Layer):
        return 1.0, 1.0
    if node.kind == "repeat":
        w, h = _measure(node.branches[0])
        return w, h + _LABEL
    sizes = [_measure(b) if b else (_EMPTY_W, 0.0) for b in node.branches]
    return sum(s[0] for s in sizes), max(s[1] for s in sizes) + 1 + _LABEL


class _Layout:
    """Boxes (center x, top row, box), arrows (polylines) and frames of a model with blocks, in
    grid units: a column a box wide, a row a box tall plus its gap."""

    def __init__(self):
        self.boxes: list[tuple[float, float, dict]] = []
        self.arrows: list[list[tuple[float, float]]] = []
        self.frames: list[tuple] = []  # x0, y0, x1, y1, label, label x (None: at the right), depth
        self.depth = 0

    def stack(self, nodes: list, cx: float, top: float, src: tuple[float, float]) -> tuple[float, float]:
        for node in nodes:
            src, top = self.node(node, cx, top, src)
        return src

    def _box(self, box: dict, cx: float, top: float, src: tuple[float, float]) -> tuple[tuple[float, float], float]:
        self.boxes.append((cx, top, box))
        self.arrows.append(_route(src, (cx, top)))
        return (cx, top + 1), top + 1

    def node(self, node, cx: float, top: float, src):
        if isinstance(node, Layer):
            return self._box(_layer_box(node), cx, top, src)
        w, h = _measure_node(node)
        x0 = cx - w / 2
        label = f"{node.name} · repeat ×{node.options.get('times', 1)}" if node.kind == "repeat" else node.name
        lx = x0
        if node.kind != "repeat":  # the label goes over the first branch with boxes, clear of the arrows
            for branch in node.branches:
                if branch:
                    break
                lx += _EMPTY_W
        self.frames.append((x0, top, x0 + w, top + h, label, lx if node.kind != "repeat" else None, self.depth))
        inner_top = top + _LABEL
        self.depth += 1
        if node.kind == "repeat":
            out = self.stack(node.branches[0], cx, inner_top, src)
            self.depth -= 1
            return out, top + h
        ends = []
        x = x0
        for branch in node.branches:
            bw = _measure(branch)[0] if branch else _EMPTY_W
            bx = x + bw / 2
            if branch:
                ends.append(self.stack(branch, bx, inner_top, (src[0], src[1], bx)))
            else:
                ends.append((src[0], src[1], bx))  # the block's input, drawn down its own column
            x += bw
        self.depth -= 1
        merge_top = top + h - 1
        self.boxes.append((cx, merge_top, _merge_box(node)))
        for end in ends:
            self.arrows.append(_route(end, (cx, merge_top)))
        return (cx, merge_top + 1), top + h


def _route(src, dst: tuple[float, float]) -> list[tuple[float, float]]:
    """An orthogonal path from a box's bottom (or a fork: (x, y, column)) to a box's top."""
    if len(src) == 3:  # a fork: leave the source, turn to the branch's column, go down
        x, y, col = src
        pts = [(x, y)]
        if col != x:  # in the gap above the block's frame
            pts += [(x, y - 0.2), (col, y - 0.2)]
        pts.append((col, dst[1] - 0.12 if col != dst[0] else dst[1]))
        if col != dst[0]:
            pts += [(dst[0], dst[1] - 0.12), dst]
        return pts
    x, y = src
    if x == dst[0]:
        return [(x, y), dst]
    mid = dst[1] - 0.12
    return [(x, y), (x, mid), (dst[0], mid), dst]


def tree_layout(model: Model) -> _Layout:
    lay = _Layout()
    w, _ = _measure(model.body)
    cx = w / 2
    inp = {"title": f"{model.input.name} (input)", "options": _input_options(model),
           "shape": shape_text(model.input.shape), "params": "", "family": "input"}
    lay.boxes.append((cx, 0.0, inp))
    lay.stack(model.body, cx, 1.0, (cx, 1.0))
    return lay


def _tree_figure(model: Model):
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    lay = tree_layout(model)
    cols, rows = _measure(model.body)
    rows += 1
    col_w, box_w, box_h, gap = 4.0, 3.7, 0.8, 0.36
    row_h = box_h + gap
    head, margin = 0.95, 0.3
    width = max(cols * col_w + 2 * margin, 6.4)
    height = head + rows * row_h + 0.2
    x_off = (width - cols * col_w) / 2
    fig = Figure(figsize=(width, height), dpi=110)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(width / 2, 0.38, model.name, ha="center", va="center", fontsize=14, fontweight="bold", color="#212121")
    ax.text(width / 2, 0.68, f"{model.total_params:,} parameters · input {shape_text(model.input.shape)} → "
            f"output {shape_text(model.output_shape)}", ha="center", va="center", fontsize=9, color="#616161")

    def X(c: float) -> float:
        return x_off + c * col_w

    def Y(r: float, bottom: bool = False) -> float:
        return head + r * row_h - (gap if bottom else 0)

    for x0, y0, x1, y1, label, lx, depth in lay.frames:
        inset = 0.02 + 0.05 * min(depth, 2)  # a frame inside another is drawn a little inside it
        ax.add_patch(FancyBboxPatch((X(x0) + inset, Y(y0) - 0.02), X(x1) - X(x0) - 2 * inset,
                                    Y(y1, True) - Y(y0) + 0.12 - 0.04 * min(depth, 2),
                                    boxstyle="round,pad=0,rounding_size=0.12", linewidth=1.0, linestyle="--",
                                    edgecolor="#9e9e9e", facecolor="none"))
        if lx is None:
            ax.text(X(x1) - inset - 0.14, Y(y0) + 0.2, label, ha="right", va="center", fontsize=9,
                    fontstyle="italic", color="#616161")
        else:
            ax.text(X(lx) + inset + 0.14, Y(y0) + 0.2, label, ha="left", va="center", fontsize=9,
                    fontstyle="italic", color="#616161")
    for pts in lay.arrows:
        xy = [(X(x), Y(y, bottom=(i == 0 and y > 0))) for i, (x, y) in enumerate(pts)]
        xy[-1] = (xy[-1][0], xy[-1][1] - 0.02)
        path = Path(xy, [Path.MOVETO] + [Path.LINETO] * (len(xy) - 1))
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=11, linewidth=1.2, color="#757575"))
    for cx, top, b in lay.boxes:
        fill, edge = _MERGE_COLORS if b["family"] == "merge" else _COLORS[b["family"]]
        left, y = X(cx) - box_w / 2, Y(top)
        ax.add_patch(FancyBboxPatch((left, y), box_w, box_h, boxstyle="round,pad=0,rounding_size=0.08",
                                    linewidth=1.4, edgecolor=edge, facecolor=fill))
        ax.add_patch(FancyBboxPatch((left, y), 0.08, box_h, boxstyle="round,pad=0,rounding_size=0.04",
                                    linewidth=0, facecolor=edge))
        ax.text(left + 0.18, y + box_h * 0.3, b["title"], ha="left", va="center", fontsize=9, fontweight="bold",
                color="#212121")
        ax.text(box_w + left - 0.12, y + box_h * 0.3, b["shape"], ha="right", va="center", fontsize=9, color=edge,
                family="monospace", fontweight="bold")
        options = b["options"] if len(b["options"]) <= 52 else b["options"][:51] + "…"  # never under the params
        small = 8 if len(options) <= 36 else 7 if len(options) <= 46 else 6.5
        ax.text(left + 0.18, y + box_h * 0.72, options, ha="left", va="center", fontsize=small, color="#424242")
        ax.text(box_w + left - 0.12, y + box_h * 0.72, b["params"], ha="right", va="center", fontsize=8,
                color="#424242")
    return fig


def _tree_dot(model: Model) -> str:
    lines = _dot_header(model)
    count = [0]

    def box(b: dict, indent: str) -> str:
        fill, edge = _MERGE_COLORS if b["family"] == "merge" else _COLORS[b["family"]]
        text = "\n".join(t for t in (b["title"], b["options"], " · ".join(x for x in (b["shape"], b["params"]) if x)) if t)
        node_id = f"n{count[0]}"
        count[0] += 1
        shape = ", shape=octagon" if b["family"] == "merge" else ""
        lines.append(f"{indent}{node_id} [label={_dot_string(text)}, fillcolor={_dot_string(fill)}, "
                     f"color={_dot_string(edge)}{shape}];")
        return node_id

    def stack(nodes: list, src: str, indent: str) -> str:
        for node in nodes:
            src = step(node, src, indent)
        return src

    def step(node, src: str, indent: str) -> str:
        if isinstance(node, Layer):
            dst = box(_layer_box(node), indent)
            lines.append(f"{indent}{src} -> {dst};")
            return dst
        label = f"{node.name} (repeat ×{node.options.get('times', 1)})" if node.kind == "repeat" else node.name
        lines.append(f"{indent}subgraph {_dot_string('cluster_' + node.name)} {{")
        lines.append(f'{indent}  label={_dot_string(label)}; style="dashed,rounded"; color="#9e9e9e";')
        if node.kind == "repeat":
            out = stack(node.branches[0], src, indent + "  ")
            lines.append(f"{indent}}}")
            return out
        ends = [stack(branch, src, indent + "  ") for branch in node.branches]
        merge = box(_merge_box(node), indent + "  ")
        lines.append(f"{indent}}}")
        for i, end in enumerate(ends, 1):
            lines.append(f"{indent}{end} -> {merge} [label={_dot_string(f'branch {i}')}];")
        return merge

    first = box({"title": f"{model.input.name} (input)", "options": _input_options(model),
                 "shape": shape_text(model.input.shape), "params": "", "family": "input"}, "  ")
    stack(model.body, first, "  ")
    lines.append("}")
    return "\n".join(lines) + "\n"
