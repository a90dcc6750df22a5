"""Shared by tests/onnx: the contract specs, one small spec per layer option, and helpers to
compile and run them. Imported by the test files as a plain module (pytest puts this folder
on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnc.lang.checker import check_file, check_source
from nnc.lang.model import Model

from more_cases import MORE_SPECS

DATA = Path(__file__).resolve().parent.parent / "data" / "contract"
CONTRACT = sorted(DATA.glob("*.nnspec"))
CONTRACT_IDS = [p.stem for p in CONTRACT]

# One small spec per layer kind and option worth telling apart: strides, `same` padding with
# the odd pixel (even kernels, strides above 1), rectangular windows, every activation, ranks,
# channels-first runs ending in each kind of consumer, recurrent variants.
OPTION_SPECS: dict[str, str] = {
    "conv1d_valid_relu": "input x: float32[11, 3]\nconv1d 4 kernel=3 activation=relu",
    "conv1d_same_even_stride": "input x: float32[11, 3]\nconv1d 4 kernel=4 stride=2 padding=same use_bias=false activation=tanh",
    "conv1d_same_odd_stride3": "input x: float32[10, 2]\nconv1d 3 kernel=5 stride=3 padding=same activation=sigmoid",
    "conv2d_same_even_stride": "input x: float32[9, 10, 2]\nconv2d 3 kernel=4x2 stride=2 padding=same activation=sigmoid",
    "conv2d_rect_softmax": "input x: float32[9, 10, 2]\nconv2d 3 kernel=3x5 stride=2x1 activation=softmax\nconv2d 2 kernel=1 use_bias=false",
    "conv2d_same_stride1": "input x: float32[7, 6, 3]\nconv2d 4 kernel=3 padding=same activation=linear",
    "maxpool1d": "input x: float32[11, 3]\nmaxpool1d 2\nmaxpool1d 3 stride=1",
    "maxpool1d_same": "input x: float32[11, 3]\nmaxpool1d 2 padding=same\nmaxpool1d 3 stride=2 padding=same",
    "avgpool1d": "input x: float32[11, 3]\navgpool1d 3 stride=2",
    "avgpool1d_same": "input x: float32[11, 3]\navgpool1d 4 stride=3 padding=same\navgpool1d 2 padding=same",
    "maxpool2d": "input x: float32[9, 10, 2]\nmaxpool2d 2\nmaxpool2d 2x3 stride=1",
    "maxpool2d_same": "input x: float32[9, 10, 2]\nmaxpool2d 2 padding=same\nmaxpool2d 3 stride=2 padding=same",
    "avgpool2d": "input x: float32[9, 10, 2]\navgpool2d 3 stride=2\navgpool2d 2x1",
    "avgpool2d_same": "input x: float32[9, 10, 2]\navgpool2d 2 padding=same\navgpool2d 3 stride=2 padding=same",
    "globalmaxpool_1d": "input x: float32[11, 3]\nglobalmaxpool",
    "globalavgpool_1d_after_conv": "input x: float32[11, 3]\nconv1d 4 kernel=3\nglobalavgpool",
    "globalmaxpool_2d_after_conv": "input x: float32[7, 6, 2]\nconv2d 4 kernel=3\nglobalmaxpool",
    "globalavgpool_2d": "input x: float32[7, 6, 2]\nglobalavgpool\ndense 3",
    "flatten_after_conv": "input x: float32[8, 7, 2]\nconv2d 3 kernel=2\nmaxpool2d 2\nflatten\ndense 5 activation=softmax",
    "flatten_raw": "input x: float32[4, 3, 2]\nflatten\ndense 2 use_bias=false",
    "dense_rank3": "input x: float32[5, 4]\ndense 6 activation=relu\ndense 3 use_bias=false\nflatten\ndense 2 activation=sigmoid",
    "dense_after_conv1d": "input x: float32[12, 3]\nconv1d 4 kernel=3\ndense 2 activation=softmax",
    "dropout_and_activations": "input x: float32[6]\ndense 8\ndropout 0.5\nrelu\ndense 4 activation=tanh\ntanh\nsigmoid\nsoftmax",
    "activations_channels_first": "input x: float32[6, 5, 2]\nconv2d 3 kernel=2\nsoftmax\nrelu\nmaxpool2d 2\ntanh\nsigmoid\nflatten",
    "dense_activations": "input x: float32[5]\ndense 4 activation=relu\ndense 4 activation=sigmoid\ndense 4 activation=tanh\ndense 3 activation=softmax",
    "embedding": "input t: int64[7] vocab=20\nembedding 4\nglobalavgpool\ndense 1",
    "embedding_own_vocab": "input t: int64[7] vocab=20\nembedding 3 vocab=25\nflatten",
    "rnn_tanh_sequences": "input x: float32[6, 3]\nrnn 5 return_sequences=true\nrnn 4",
    "rnn_relu": "input x: float32[6, 3]\nrnn 5 activation=relu",
    "rnn_sigmoid": "input x: float32[6, 3]\nrnn 5 activation=sigmoid return_sequences=true",
    "rnn_linear": "input x: float32[6, 3]\nrnn 5 activation=linear",
    "rnn_softmax": "input x: float32[6, 3]\nrnn 5 activation=softmax return_sequences=true\nrnn 3 activation=softmax",
    "lstm": "input x: float32[6, 3]\nlstm 5 return_sequences=true\nlstm 4",
    "gru": "input x: float32[6, 3]\ngru 5 return_sequences=true\ngru 4",
    "gru_reset_before": "input x: float32[6, 3]\ngru 5 reset_after=false return_sequences=true\ngru 4 reset_after=false",
    "conv1d_into_gru": "input x: float32[12, 3]\nconv1d 4 kernel=3\nmaxpool1d 2\ngru 5",
    "embedding_lstm_dense": "input t: int64[9] vocab=30\nembedding 4\nlstm 3 return_sequences=true\ndense 2 activation=softmax",
}
OPTION_SPECS.update(MORE_SPECS)  # the kinds and options of "More kinds and options" (more_cases.py)

# The recurrent options of "More kinds and options": bidirectional with each merge, go_backwards,
# dropout (the identity in the graph), and activations the ONNX operators do not run everywhere
# (unrolled); tests/onnx/test_onnx_recurrent.py runs them in every opset.
RECURRENT_SPECS: dict[str, str] = {
    "rnn_bidirectional": "input x: float32[5, 3]\nrnn 4 bidirectional=true return_sequences=true\n"
                         "rnn 3 bidirectional=true merge=ave",
    "lstm_bidirectional": "input x: float32[5, 3]\nlstm 4 bidirectional=true merge=sum return_sequences=true\n"
                          "lstm 3 bidirectional=true merge=mul",
    "gru_bidirectional": "input x: float32[5, 3]\ngru 4 bidirectional=true merge=mul return_sequences=true\n"
                         "gru 3 bidirectional=true reset_after=false merge=ave return_sequences=true\ngru 2 bidirectional=true",
    "recurrent_go_backwards": "input x: float32[5, 3]\nrnn 4 go_backwards=true return_sequences=true\n"
                              "lstm 4 go_backwards=true return_sequences=true\ngru 3 go_backwards=true return_sequences=true\n"
                              "gru 2 go_backwards=true reset_after=false return_sequences=true\nlstm 3 go_backwards=true",
    "recurrent_dropout": "input x: float32[5, 3]\nlstm 4 dropout=0.3 recurrent_dropout=0.4 return_sequences=true\n"
                         "gru 3 dropout=0.5 bidirectional=true return_sequences=true\nrnn 2 recurrent_dropout=0.2",
    "lstm_activations": "input x: float32[4, 3]\nlstm 3 activation=relu recurrent_activation=hard_sigmoid return_sequences=true\n"
                        "lstm 3 activation=gelu recurrent_activation=softsign bidirectional=true return_sequences=true\n"
                        "lstm 2 activation=softmax recurrent_activation=tanh go_backwards=true",
    "gru_activations": "input x: float32[4, 3]\ngru 3 activation=elu recurrent_activation=hard_sigmoid return_sequences=true\n"
                       "gru 3 activation=silu reset_after=false go_backwards=true return_sequences=true\n"
                       "gru 2 activation=log_softmax recurrent_activation=relu6 bidirectional=true merge=sum",
    "rnn_activations": "input x: float32[4, 3]\nrnn 3 activation=selu bidirectional=true merge=mul return_sequences=true\n"
                       "rnn 3 activation=mish go_backwards=true return_sequences=true\nrnn 2 activation=leaky_relu go_backwards=true",
    # the operators' own activations, with their alphas and betas, in both directions
    "recurrent_operator_activations": (
        "input x: float32[4, 3]\nlstm 3 activation=leaky_relu recurrent_activation=hard_sigmoid bidirectional=true "
        "return_sequences=true\ngru 3 activation=softplus recurrent_activation=elu go_backwards=true return_sequences=true\n"
        "rnn 3 activation=linear bidirectional=true merge=ave return_sequences=true\nrnn 2 activation=softsign"),
}
OPTION_SPECS.update(RECURRENT_SPECS)


def option_model(name: str) -> Model:
    r = check_source(f"model {name}\n{OPTION_SPECS[name]}\n", f"<{name}>")
    assert r.ok, [d.message for d in r.diagnostics]
    return r.model


def contract_model(path) -> Model:
    r = check_file(str(path))
    assert r.ok, [d.message for d in r.diagnostics]
    return r.model


def random_weights(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights of a scale that exercises every path (biases not zero, unlike Keras's
    initialization), as float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in model.weight_shapes().items():
        fan = shape[-2] if len(shape) >= 2 else shape[-1]
        out[name] = (rng.standard_normal(shape) / np.sqrt(max(fan, 1))).astype(np.float32)
        if name.endswith(".moving_variance"):  # a variance is positive
            out[name] = (np.abs(out[name]) + 0.5).astype(np.float32)
    return out


def random_input(model: Model, batch: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (batch, *model.input.shape)
    if model.input.dtype == "int64":
        emb = [l for l in model.layers if l.kind == "embedding"]
        high = min([model.input.vocab or 1 << 30] + [l.options["vocab"] for l in emb])
        return rng.integers(0, high, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def ort_run(proto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, what: str = "") -> None:
    """Within `rtol` relative to each value, with a floor of rtol times the output's scale
    (so a value that rounds to ~0 is compared at the precision of its neighbours)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)
