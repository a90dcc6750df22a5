"""Blocks (LANGUAGE.md, "Blocks") on the NumPy backend: forward and backward through forks and
joins, against central finite differences in float64 (as test_backend_gradients does for the
layer kinds) and against the merges' definitions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "onnx"))

from block_cases import BLOCK_SPECS, block_model  # noqa: E402
from test_backend_gradients import check_gradients, make_inputs, make_weights  # noqa: E402

from nnc.engines.numpy import Network  # noqa: E402
from nnc.engines.numpy.kernels import MERGE_KERNELS  # noqa: E402
from nnc.lang.model import MERGES, Block  # noqa: E402


def _blocks(nodes):
    for n in nodes:
        if isinstance(n, Block):
            yield n
            for b in n.branches:
                yield from _blocks(b)


def test_every_merge_kind_has_a_kernel():
    missing = sorted(set(MERGES) - set(MERGE_KERNELS))
    assert not missing, f"merge kinds without a NumPy kernel (nnc.engines.numpy.kernels.MERGE_KERNELS): {missing}"


def test_block_cases_cover_every_merge_kind_residual_repeat_and_nesting():
    kinds, nested = set(), False
    for name in BLOCK_SPECS:
        model = block_model(name)
        for block in _blocks(model.body):
            kinds.add(block.kind)
            nested |= any(isinstance(n, Block) for b in block.branches for n in b) and block.kind != "repeat"
    assert kinds >= set(MERGES) | {"residual", "repeat"}, sorted(set(MERGES) - kinds)
    assert nested


@pytest.mark.parametrize("name", list(BLOCK_SPECS))
def test_block_gradients_match_finite_differences(name):
    check_gradients(block_model(name))


def _forward(model, weights, x):
    return Network(model, weights, dtype=np.float64).forward(x)


def test_merges_compute_keras_merge_layers():
    # each join against its definition, from the branches' outputs computed by chain models
    rng = np.random.default_rng(0)
    model = block_model("maximum")  # dense_1, then max(tanh(dense_2(h)), h, dense_3(h)), dense_4
    w = make_weights(model, rng)
    x = make_inputs(model, rng, n=5)
    h = x @ w["dense_1.kernel"] + w["dense_1.bias"]
    branches = [np.tanh(h @ w["dense_2.kernel"] + w["dense_2.bias"]), h, h @ w["dense_3.kernel"] + w["dense_3.bias"]]
    want = np.maximum(np.maximum(branches[0], branches[1]), branches[2]) @ w["dense_4.kernel"] + w["dense_4.bias"]
    np.testing.assert_allclose(_forward(model, w, x), want, rtol=1e-12)

    model = block_model("concat_three_axis1")  # concat on the steps axis of [4, 5]
    w = make_weights(model, rng)
    x = make_inputs(model, rng, n=2)
    parts = [np.tanh(x @ w["dense_1.kernel"] + w["dense_1.bias"]), x, x @ w["dense_2.kernel"] + w["dense_2.bias"]]
    want = np.concatenate(parts, axis=1).reshape(2, -1) @ w["dense_3.kernel"] + w["dense_3.bias"]
    np.testing.assert_allclose(_forward(model, w, x), want, rtol=1e-12)

    model = block_model("subtract")
    w = make_weights(model, rng)
    x = make_inputs(model, rng, n=2)
    d = np.tanh(x @ w["dense_1.kernel"] + w["dense_1.bias"]) - (x @ w["dense_2.kernel"] + w["dense_2.bias"])
    np.testing.assert_allclose(_forward(model, w, x), d @ w["dense_3.kernel"] + w["dense_3.bias"], rtol=1e-12)

    model = block_model("average")
    w = make_weights(model, rng)
    x = make_inputs(model, rng, n=2)
    b = [x @ w["dense_1.kernel"] + w["dense_1.bias"], np.maximum(x @ w["dense_2.kernel"] + w["dense_2.bias"], 0),
         x @ w["dense_3.kernel"]]
    want = ((b[0] + b[1] + b[2]) / 3).reshape(2, -1) @ w["dense_4.kernel"] + w["dense_4.bias"]
    np.testing.assert_allclose(_forward(model, w, x), want, rtol=1e-12)


@pytest.mark.parametrize("merge,shares", [
    # a tie at each pairwise step of the left fold splits the gradient in halves, as
    # keras.ops.maximum/minimum does on the torch backend (torch.maximum's rule)
    ("maximum", [0.25, 0.25, 0.5]),
    ("minimum", [0.25, 0.25, 0.5]),
    ("add", [1, 1, 1]),
    ("average", [1 / 3, 1 / 3, 1 / 3]),
])
def test_tied_branches_share_the_gradient_as_keras_torch(merge, shares):
    # three dense branches with the same weights tie everywhere: each dense's kernel gradient is
    # its share times the gradient it would get as the model's only branch
    text = f"model t\ninput x: float32[5]\n{merge} {{\n" + "branch { dense 3 }\n" * 3 + "}\n"
    model = block_model(text)
    rng = np.random.default_rng(2)
    k, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    w = {f"dense_{i}.{n}": v.copy() for i in (1, 2, 3) for n, v in (("kernel", k), ("bias", b))}
    x = rng.normal(size=(4, 5))
    net = Network(model, w, dtype=np.float64)
    z = net.forward(x)
    dz = rng.normal(size=z.shape)
    grads = net.backward(dz, need_input_grad=True)
    alone = x.T @ dz
    for i, share in enumerate(shares, start=1):
        np.testing.assert_allclose(grads[f"dense_{i}.kernel"], share * alone, rtol=1e-12)
        np.testing.assert_allclose(grads[f"dense_{i}.bias"], share * dz.sum(0), rtol=1e-12)
    np.testing.assert_allclose(net.input_grad, sum(shares) * dz @ k.T, rtol=1e-12)


def test_a_residual_block_adds_its_input():
    model = block_model("residual_conv")
    rng = np.random.default_rng(4)
    w = make_weights(model, rng)
    x = make_inputs(model, rng, n=2)
    zero = dict(w, **{k: np.zeros_like(v) for k, v in w.items() if k.startswith("conv2d_3.")})
    # with the body's last conv zero the block is the identity: the model is conv, relu, dense
    from nnc.engines.numpy.kernels import Conv

    h = Conv(model.layers[0]).forward(x, {"kernel": w["conv2d_1.kernel"], "bias": w["conv2d_1.bias"]})[0]
    want = np.maximum(np.maximum(h, 0), 0).reshape(2, -1) @ w["dense_1.kernel"] + w["dense_1.bias"]
    np.testing.assert_allclose(_forward(model, zero, x), want, rtol=1e-12)


def test_final_activation_is_fused_only_after_the_last_top_level_step():
    rng = np.random.default_rng(5)
    fused = block_model("rank1_multi_read")  # ... dense 2 activation=softmax
    assert Network(fused, make_weights(fused, rng)).final_activation == "softmax"
    inside = block_model("model t\ninput x: float32[4]\nresidual { dense 4 activation=softmax }\n")
    net = Network(inside, make_weights(inside, rng), dtype=np.float64)
    assert net.final_activation is None
    x = make_inputs(inside, rng, n=3)
    w = net.weights
    a = x @ w["dense_1.kernel"] + w["dense_1.bias"]
    e = np.exp(a - a.max(-1, keepdims=True))
    np.testing.assert_allclose(net.predict(x), x + e / e.sum(-1, keepdims=True), rtol=1e-12)
    repeated = block_model("model t\ninput x: float32[4]\nrepeat 2 { dense 4 activation=sigmoid }\n")
    assert Network(repeated, make_weights(repeated, rng)).final_activation == "sigmoid"


@pytest.mark.parametrize("name", ["dropout_in_branches", "nested", "pool_in_branch"])
def test_batch_chunks_in_threads_give_the_whole_batch_results(name):
    # dropout masks are drawn for the whole batch, in reading order, before the batch is cut
    model = block_model(name)
    rng = np.random.default_rng(3)
    weights = make_weights(model, rng)
    x = make_inputs(model, rng, n=48)
    R = rng.normal(size=(48,) + model.output_shape)
    results = []
    for threads in (1, 3):
        net = Network(model, weights, dtype=np.float64, threads=threads)
        z = net.forward(x, training=True, rng=np.random.default_rng(5))
        results.append((z, net.backward(R, need_input_grad=True), net.input_grad, net.predict(x, batch_size=33)))
    (z1, g1, d1, p1), (z, g, d, p) = results
    np.testing.assert_allclose(z, z1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p, p1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d, d1, rtol=1e-12, atol=1e-14)
    assert set(g) == set(g1) == set(weights)
    for k in g1:
        np.testing.assert_allclose(g[k], g1[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_dropout_in_each_branch_draws_its_own_mask():
    model = block_model("dropout_in_branches")
    w = make_weights(model, np.random.default_rng(0))
    w = {k: np.ones_like(v) if k.endswith("kernel") else np.zeros_like(v) for k, v in w.items()}
    net = Network(model, w, dtype=np.float64)
    x = np.ones((400, 6))
    net.forward(x, training=True, rng=np.random.default_rng(1))
    # the add block's input h = 6 everywhere; branch 1: dense(dropout_0.5(h)); branch 2: dropout_0.25(h)
    from nnc.engines.numpy.network import Join

    join = next(op for op in net.steps if isinstance(op, Join))
    c = net._caches[0]
    m1, m2 = c[join.branches[0][0].id], c[join.branches[1][0].id]
    assert abs((m1 == 0).mean() - 0.5) < 0.03 and abs((m2 == 0).mean() - 0.25) < 0.03
    assert not np.array_equal(m1[:, :8] == 0, m2 == 0)


def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_no_kernel_writes_into_its_input_or_its_gradient():
    # a block hands the same array to several branches (its input forward, one dy backward for
    # add and residual): a kernel that wrote into either would corrupt a sibling branch, so every
    # kernel of every gradient case runs here on read-only arrays (numpy raises on a write)
    from nnc.engines.numpy.network import Step
    from test_backend_gradients import CASES, build

    for inp, body in CASES:
        model = build(inp, body)
        rng = np.random.default_rng(0)
        w = make_weights(model, rng)
        net = Network(model, w, dtype=np.float64)
        h = _frozen(make_inputs(model, rng))
        for step in net._flat:
            kernel = step.kernel
            lw = {n: w[f"{step.layer}.{n}"] for n in step.weight_names}
            y, cache = kernel.forward(h, lw, True, np.random.default_rng(1))
            kernel.backward(_frozen(rng.normal(size=np.shape(y))), lw, cache, True)
            h = _frozen(y)
        assert all(isinstance(s, Step) for s in net.steps)
