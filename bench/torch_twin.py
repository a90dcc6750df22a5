"""The PyTorch twin of a checked model, for the benchmarks: the same layers and the same
weights (moved from Keras layouts to PyTorch's), taking the same channels-last input."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnc.lang.model import Model

_ACT = {"linear": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _act(name: str) -> nn.Module:
    return nn.Softmax(dim=-1) if name == "softmax" else _ACT[name]()


class _Permute(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class _Recurrent(nn.Module):
    def __init__(self, rnn: nn.Module, return_sequences: bool):
        super().__init__()
        self.rnn, self.return_sequences = rnn, return_sequences

    def forward(self, x):
        y, _ = self.rnn(x)
        return y if self.return_sequences else y[:, -1]


def _t(a) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))


def torch_model(model: Model, weights: dict[str, np.ndarray]) -> nn.Module:
    """Supports the kinds of the contract specs (conv2d valid, maxpool2d, flatten, dense,
    embedding, rnn, lstm, gru)."""
    mods: list[nn.Module] = []
    first = False  # channels-first inside, as PyTorch convolves
    for layer in model.layers:
        o, w = layer.options, {n: weights[f"{layer.name}.{n}"] for n in layer.weights}
        if layer.kind in ("conv2d", "maxpool2d") and not first:
            mods.append(_Permute(0, 3, 1, 2))
            first = True
        if layer.kind not in ("conv2d", "maxpool2d") and first:
            mods.append(_Permute(0, 2, 3, 1))
            first = False
        if layer.kind == "conv2d":
            assert o["padding"] == "valid"
            c = nn.Conv2d(layer.input_shape[-1], o["filters"], o["kernel"], o["stride"], bias=o["use_bias"])
            c.weight = _t(np.transpose(w["kernel"], (3, 2, 0, 1)))
            if o["use_bias"]:
                c.bias = _t(w["bias"])
            mods += [c, _act(o["activation"])]
        elif layer.kind == "maxpool2d":
            mods.append(nn.MaxPool2d(o["pool"], layer.spec.strides(o)))
        elif layer.kind == "flatten":
            mods.append(nn.Flatten())
        elif layer.kind == "dense":
            d = nn.Linear(layer.input_shape[-1], o["units"], bias=o["use_bias"])
            d.weight = _t(w["kernel"].T)
            if o["use_bias"]:
                d.bias = _t(w["bias"])
            mods += [d, _act(o["activation"])]
        elif layer.kind == "embedding":
            e = nn.Embedding(o["vocab"], o["dim"])
            e.weight = _t(w["embeddings"])
            mods.append(e)
        elif layer.kind in ("rnn", "lstm", "gru"):
            u, n_in = o["units"], layer.input_shape[-1]
            k, r, b = w["kernel"], w["recurrent_kernel"], w["bias"]
            if layer.kind == "rnn":
                m = nn.RNN(n_in, u, nonlinearity=o["activation"], batch_first=True)
                b_ih, b_hh = b, np.zeros_like(b)
            elif layer.kind == "lstm":  # PyTorch's gate order i, f, g, o is Keras's i, f, c, o
                m = nn.LSTM(n_in, u, batch_first=True)
                b_ih, b_hh = b, np.zeros_like(b)
            else:  # PyTorch's GRU is Keras's reset_after=true, with gates r, z, n against z, r, h
                assert o["reset_after"]
                m = nn.GRU(n_in, u, batch_first=True)
                order = np.r_[u:2 * u, 0:u, 2 * u:3 * u]
                k, r, b_ih, b_hh = k[:, order], r[:, order], b[0][order], b[1][order]
            m.weight_ih_l0, m.weight_hh_l0 = _t(k.T), _t(r.T)
            m.bias_ih_l0, m.bias_hh_l0 = _t(b_ih), _t(b_hh)
            mods.append(_Recurrent(m, o["return_sequences"]))
        elif layer.kind == "dropout":
            mods.append(nn.Dropout(o["rate"]))
        else:
            raise NotImplementedError(layer.kind)
    if first:
        mods.append(_Permute(0, 2, 3, 1))
    return nn.Sequential(*mods).eval()


def example_input(model: Model, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch, *model.input.shape)
    if model.input.dtype == "int64":
        return rng.integers(0, model.input.vocab, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def export(model: Model, weights: dict[str, np.ndarray], path: str, opset: int, dynamo: bool) -> None:
    """torch.onnx.export with a dynamic batch, as `nnc compile` writes it."""
    net = torch_model(model, weights)
    x = torch.from_numpy(example_input(model, 2))
    if dynamo:
        torch.onnx.export(net, (x,), path, input_names=[model.input.name], opset_version=opset,
                          dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, verbose=False)
    else:
        torch.onnx.export(net, (x,), path, input_names=[model.input.name], opset_version=opset, dynamo=False,
                          dynamic_axes={model.input.name: {0: "batch"}})


def main(argv: list[str]) -> None:
    """`python bench/torch_twin.py MODEL.pkl WEIGHTS.npz OUT.onnx OPSET legacy|dynamo`: the
    torch side of bench_compile, as one process (the pickled Model needs only nnc.lang.model)."""
    import pickle
    import warnings

    warnings.simplefilter("ignore")
    model_pkl, weights_npz, out, opset, how = argv
    with open(model_pkl, "rb") as f:
        model = pickle.load(f)
    with np.load(weights_npz) as data:
        weights = {k: data[k] for k in data.files}
    export(model, weights, out, int(opset), dynamo=how == "dynamo")


if __name__ == "__main__":
    import contextlib
    import io
    import sys

    with contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter prints its progress
        main(sys.argv[1:])
