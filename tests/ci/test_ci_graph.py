"""`nnc graph`: every spec in specs/ renders to PNG (and SVG, DOT) with nothing but the
README's install; the boxes carry the names, shapes and Keras's parameter counts."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ci_helpers import REPO, repo_specs, run_nnc

GRAPH_DIR = os.environ.get("NNC_GRAPH_DIR")  # set it to keep the PNGs and look at them


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


SPECS = repo_specs()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_renders_to_png(capsys, tmp_path, path):
    out = os.path.join(GRAPH_DIR or tmp_path, path.stem + ".png")
    rc, _, err = run_nnc(capsys, "graph", str(path), "-o", out)
    assert rc == 0, err
    data = open(out, "rb").read()
    w, h = png_size(data)
    from nnc import load

    n_boxes = len(load(str(path)).layers) + 1
    assert w >= 600 and h >= 100 * n_boxes  # a box a layer, each tall enough to read
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.std() > 0.05  # not a blank image


def test_the_convnet_boxes_say_what_keras_says(tmp_path):
    """Per-layer shapes and counts of the lecture's convnet, as Keras's model.summary() prints them."""
    from nnc import load
    from nnc.tools.graph import boxes, to_dot

    model = load(str(REPO / "tests" / "data" / "contract" / "mnist_convnet.nnspec"))
    got = [(b["title"], b["options"], b["shape"], b["params"]) for b in boxes(model)]
    assert got == [
        ("image (input)", "float32", "28×28×1", ""),
        ("conv2d_1 (conv2d)", "32 filters 3×3, relu", "26×26×32", "320 params"),
        ("maxpool2d_1 (maxpool2d)", "max pool 2×2", "13×13×32", "0 params"),
        ("conv2d_2 (conv2d)", "64 filters 3×3, relu", "11×11×64", "18,496 params"),
        ("maxpool2d_2 (maxpool2d)", "max pool 2×2", "5×5×64", "0 params"),
        ("conv2d_3 (conv2d)", "64 filters 3×3, relu", "3×3×64", "36,928 params"),
        ("flatten_1 (flatten)", "to one vector", "576", "0 params"),
        ("dense_1 (dense)", "64 units, relu", "64", "36,928 params"),
        ("dense_2 (dense)", "10 units, softmax", "10", "650 params"),
    ]
    dot = to_dot(model)
    assert dot.count(" -> ") == 8 and dot.count("[label=") == 9
    assert "93,322 parameters" in dot


def test_key_options_in_words():
    from nnc import loads
    from nnc.tools.graph import key_options

    m = loads("model m\ninput x: float32[16, 16, 3]\nconv2d 8 kernel=3x5 stride=2 padding=same use_bias=false\n"
              "maxpool2d 3 stride=1\nflatten\ndropout 0.5\ndense 1 activation=sigmoid\n")
    assert [key_options(l) for l in m.layers] == [
        "8 filters 3×5, stride 2×2, same padding, no bias", "max pool 3×3, stride 1×1", "to one vector",
        "rate 0.5", "1 unit, sigmoid"]
    m = loads("model r\ninput t: int64[20] vocab=100\nembedding 8\nlstm 4 return_sequences=true\ngru 2 reset_after=false\n")
    assert [key_options(l) for l in m.layers] == [
        "100 ids → 8-d vectors", "4 units, all steps", "2 units, reset_after=false"]


def test_key_options_of_the_newer_kinds():
    # the options of the newer kinds were left out of the diagram (a bidirectional GRU read as a
    # plain one, a dilated causal conv as a plain conv, a separable conv had no words at all)
    from nnc import loads
    from nnc.tools.graph import key_options

    m = loads("model m\ninput x: float32[12, 4]\nconv1d 4 kernel=3 padding=causal dilation=2 groups=2\n"
              "separable_conv1d 6 kernel=3 depth_multiplier=2\ndepthwise_conv1d kernel=2\n"
              "gru 3 bidirectional=true merge=sum return_sequences=true\nreshape [-1, 1]\n"
              "attention heads=2 key_dim=4 causal=true\nbatchnorm center=false\nzeropad1d [1, 2]\n")
    assert [key_options(l) for l in m.layers] == [
        "4 filters 3, dilation 2, 2 groups, causal padding", "6 filters 3, depth multiplier 2", "depthwise 2",
        "3 units, all steps, bidirectional (sum)", "shape=[-1, 1]", "heads=2, key_dim=4, causal=true",
        "center=false", "padding=[1, 2]"]


def test_svg_and_dot_outputs(capsys, tmp_path):
    spec = REPO / "tests" / "data" / "contract" / "imdb_lstm.nnspec"
    svg = tmp_path / "g.svg"
    assert run_nnc(capsys, "graph", str(spec), "-o", str(svg))[0] == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    dot = tmp_path / "g.dot"
    assert run_nnc(capsys, "graph", str(spec), "-o", str(dot))[0] == 0
    text = dot.read_text(encoding="utf-8")
    assert text.startswith('digraph "imdb_lstm" {') and text.rstrip().endswith("}")
    assert "328,353 parameters" in text and "lstm_1 (lstm)" in text


def test_same_spec_same_bytes(tmp_path):
    from nnc import load
    from nnc.tools.graph import render

    model = load(str(REPO / "tests" / "data" / "contract" / "lenet_c1.nnspec"))
    for fmt in ("svg", "png"):
        assert render(model, fmt) == render(model, fmt)


def test_errors(capsys, tmp_path):
    spec = REPO / "tests" / "data" / "contract" / "lenet_c1.nnspec"
    rc, _, err = run_nnc(capsys, "graph", str(spec), "-o", str(tmp_path / "g.pdf"))
    assert rc == 2 and "expected a name ending in .svg, .png or .dot" in err
    bad = tmp_path / "bad.nnspec"
    bad.write_text("model b\ninput x: float32[4]\ndense 0\n")
    rc, _, err = run_nnc(capsys, "graph", str(bad), "-o", str(tmp_path / "b.png"))
    assert rc == 1 and "bad.nnspec:3:7: error:" in err
    assert not (tmp_path / "b.png").exists()
    assert run_nnc(capsys, "graph", str(tmp_path / "absent.nnspec"), "-o", str(tmp_path / "a.png"))[0] == 2


def test_no_system_graphviz_needed(tmp_path):
    """With an empty PATH there is no `dot` to run: the PNG is drawn by matplotlib alone."""
    spec = REPO / "tests" / "data" / "contract" / "imdb_gru.nnspec"
    out = tmp_path / "g.png"
    env = {k: v for k, v in os.environ.items() if k not in ("PATH",)}
    env["PATH"] = str(tmp_path / "empty")
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    r = subprocess.run([sys.executable, "-m", "nnc.cli", "graph", str(spec), "-o", str(out)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png_size(out.read_bytes())


BLOCKS = (
    "model blocks\ninput x: float32[8, 8, 4]\nconv2d 8 kernel=3 padding=same\n"
    "residual {\n  conv2d 8 kernel=3 padding=same activation=relu\n  conv2d 8 kernel=3 padding=same\n}\n"
    "concat {\n  branch { }\n  branch { conv2d 4 kernel=1 }\n  branch {\n    conv2d 4 kernel=1\n"
    "    conv2d 4 kernel=3 padding=same\n  }\n}\n"
    "stage: repeat 2 { conv2d 16 kernel=1 }\nglobalavgpool\ndense 10 activation=softmax\n"
)


def test_branches_are_drawn_side_by_side_and_joined_by_their_merge(tmp_path):
    from nnc import check_source
    from nnc.tools.graph import render, tree_layout

    model = check_source(BLOCKS).model
    lay = tree_layout(model)
    at = {b["title"].split(" ")[0]: (cx, top) for cx, top, b in lay.boxes}
    # the concat's three branches: the empty one and two stacks in their own columns, one row
    assert at["conv2d_4"][1] == at["conv2d_5"][1] and at["conv2d_4"][0] < at["conv2d_5"][0]
    assert at["conv2d_6"] == (at["conv2d_5"][0], at["conv2d_5"][1] + 1)
    # each merge sits below its branches, on the block's axis, with an arrow from every branch
    assert at["concat_1"][1] > at["conv2d_6"][1] and at["residual_1"][1] > at["conv2d_3"][1]
    into = [pts for pts in lay.arrows if pts[-1] == at["concat_1"]]
    assert len(into) == 3
    # a frame a block, labelled with its name (repeat with its count)
    assert {f[4] for f in lay.frames} == {"residual_1", "concat_1", "stage · repeat ×2"}
    data = render(model, "png")
    path = tmp_path / "blocks.png"
    path.write_bytes(data)
    w, h = png_size(data)
    assert w >= 600 and h >= 100 * len(lay.boxes) * 0.9
    import matplotlib.image

    assert matplotlib.image.imread(str(path)).std() > 0.05


def test_blocks_in_dot_are_clusters_with_a_merge_node():
    from nnc import check_source
    from nnc.tools.graph import to_dot

    dot = to_dot(check_source(BLOCKS).model)
    assert 'subgraph "cluster_residual_1"' in dot and 'subgraph "cluster_stage"' in dot
    assert 'label="stage (repeat ×2)"' in dot
    assert dot.count('[label="branch ') == 2 + 3  # residual: input and body; concat: three branches
    assert "concat_1 (concat)" in dot and "shape=octagon" in dot
