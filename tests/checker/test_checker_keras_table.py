"""Every layer kind and option against Keras 3: output shapes and parameter counts.

The expected values in CASES were taken once from Keras 3.x (KERAS_BACKEND=torch) by building
`keras.Sequential([keras.Input(shape, dtype), *layers])` from each case's `keras` field and
reading `layer.output.shape[1:]` and `layer.count_params()` for every layer. They are recorded
here literally so the unit test needs no Keras; `test_table_matches_keras` (marked `reference`)
rebuilds every case in Keras and fails if a recorded number no longer matches, and running this
file as a script prints the table afresh:

    KERAS_BACKEND=torch .venv/bin/python tests/checker/test_checker_keras_table.py
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import pytest

from nnc import check_source


class K(NamedTuple):
    input: str  # nnc input declaration after `input x: `
    nnc: str  # nnc layers, separated by ";"
    keras: str  # the Keras 3 layers that produced `expected`, separated by ";" (keras.layers.*)
    expected: list  # per layer: (output shape without the batch, count_params())


CASES = [
    K('float32[28, 28, 1]', 'conv2d 32 kernel=3',
      'Conv2D(32, 3)',
      [((26, 26, 32), 320)]),
    K('float32[32, 32, 1]', 'conv2d 6 kernel=5',
      'Conv2D(6, 5)',
      [((28, 28, 6), 156)]),
    K('float32[5, 5, 1]', 'conv2d 2 kernel=5',
      'Conv2D(2, 5)',
      [((1, 1, 2), 52)]),
    K('float32[10, 12, 3]', 'conv2d 8 kernel=3x5',
      'Conv2D(8, (3, 5))',
      [((8, 8, 8), 368)]),
    K('float32[7, 9, 3]', 'conv2d 8 kernel=3x5 stride=2 padding=same',
      "Conv2D(8, (3, 5), strides=2, padding='same')",
      [((4, 5, 8), 368)]),
    K('float32[8, 8, 2]', 'conv2d 4 kernel=3 stride=2',
      'Conv2D(4, 3, strides=2)',
      [((3, 3, 4), 76)]),
    K('float32[7, 7, 1]', 'conv2d 4 kernel=2 stride=3 padding=same',
      "Conv2D(4, 2, strides=3, padding='same')",
      [((3, 3, 4), 20)]),
    K('float32[9, 9, 2]', 'conv2d 4 kernel=3 stride=2x1',
      'Conv2D(4, 3, strides=(2, 1))',
      [((4, 7, 4), 76)]),
    K('float32[11, 6, 2]', 'conv2d 3 kernel=4x2 stride=3x2 padding=same',
      "Conv2D(3, (4, 2), strides=(3, 2), padding='same')",
      [((4, 3, 3), 51)]),
    K('float32[5, 5, 2]', 'conv2d 3 kernel=4 padding=same',
      "Conv2D(3, 4, padding='same')",
      [((5, 5, 3), 99)]),
    K('float32[4, 4, 3]', 'conv2d 5 kernel=1 use_bias=false',
      'Conv2D(5, 1, use_bias=False)',
      [((4, 4, 5), 15)]),
    K('float32[6, 6, 3]', 'conv2d 2 kernel=(3, 2) activation=relu',
      "Conv2D(2, (3, 2), activation='relu')",
      [((4, 5, 2), 38)]),
    K('float32[32, 32, 1]', 'conv2d filters=6 kernel_size=5 strides=1',
      'Conv2D(filters=6, kernel_size=5, strides=1)',
      [((28, 28, 6), 156)]),
    K('float32[100, 8]', 'conv1d 16 kernel=5',
      'Conv1D(16, 5)',
      [((96, 16), 656)]),
    K('float32[10, 8]', 'conv1d 16 kernel=4 stride=3 padding=same',
      "Conv1D(16, 4, strides=3, padding='same')",
      [((4, 16), 528)]),
    K('float32[11, 2]', 'conv1d 4 kernel=3 stride=2',
      'Conv1D(4, 3, strides=2)',
      [((5, 4), 28)]),
    K('float32[6, 3]', 'conv1d 4 kernel=3 use_bias=false activation=relu',
      "Conv1D(4, 3, use_bias=False, activation='relu')",
      [((4, 4), 36)]),
    K('float32[9, 3]', 'conv1d filters=4 kernel_size=2 strides=2 padding=same',
      "Conv1D(filters=4, kernel_size=2, strides=2, padding='same')",
      [((5, 4), 28)]),
    K('float32[26, 26, 32]', 'maxpool2d 2',
      'MaxPooling2D(2)',
      [((13, 13, 32), 0)]),
    K('float32[11, 11, 64]', 'maxpool2d 2',
      'MaxPooling2D(2)',
      [((5, 5, 64), 0)]),
    K('float32[9, 9, 4]', 'maxpool2d 3 stride=2',
      'MaxPooling2D(3, strides=2)',
      [((4, 4, 4), 0)]),
    K('float32[8, 9, 2]', 'maxpool2d 2x3',
      'MaxPooling2D((2, 3))',
      [((4, 3, 2), 0)]),
    K('float32[5, 5, 1]', 'maxpool2d 3 stride=1 padding=same',
      "MaxPooling2D(3, strides=1, padding='same')",
      [((5, 5, 1), 0)]),
    K('float32[7, 7, 1]', 'maxpool2d 2 padding=same',
      "MaxPooling2D(2, padding='same')",
      [((4, 4, 1), 0)]),
    K('float32[4, 4, 1]', 'maxpool2d pool_size=2 strides=1',
      'MaxPooling2D(pool_size=2, strides=1)',
      [((3, 3, 1), 0)]),
    K('float32[10, 7, 3]', 'maxpool2d 3x2 stride=1x2',
      'MaxPooling2D((3, 2), strides=(1, 2))',
      [((8, 3, 3), 0)]),
    K('float32[9, 9, 3]', 'avgpool2d 2',
      'AveragePooling2D(2)',
      [((4, 4, 3), 0)]),
    K('float32[7, 5, 2]', 'avgpool2d 3x2 stride=2x1 padding=same',
      "AveragePooling2D((3, 2), strides=(2, 1), padding='same')",
      [((4, 5, 2), 0)]),
    K('float32[6, 6, 2]', 'avgpool2d pool_size=3 strides=2',
      'AveragePooling2D(pool_size=3, strides=2)',
      [((2, 2, 2), 0)]),
    K('float32[9, 4]', 'maxpool1d 2',
      'MaxPooling1D(2)',
      [((4, 4), 0)]),
    K('float32[10, 3]', 'maxpool1d 3 stride=2 padding=same',
      "MaxPooling1D(3, strides=2, padding='same')",
      [((5, 3), 0)]),
    K('float32[10, 3]', 'avgpool1d 4 stride=1',
      'AveragePooling1D(4, strides=1)',
      [((7, 3), 0)]),
    K('float32[7, 3]', 'avgpool1d pool_size=2',
      'AveragePooling1D(pool_size=2)',
      [((3, 3), 0)]),
    K('float32[7, 3]', 'avgpool1d 3 padding=same',
      "AveragePooling1D(3, padding='same')",
      [((3, 3), 0)]),
    K('float32[10, 3]', 'maxpool1d pool_size=3 strides=1',
      'MaxPooling1D(pool_size=3, strides=1)',
      [((8, 3), 0)]),
    K('float32[9, 2]', 'maxpool1d pool=4 padding=same',
      "MaxPooling1D(pool_size=4, padding='same')",
      [((3, 2), 0)]),
    K('float32[9, 7, 2]', 'maxpool2d pool=3x2',
      'MaxPooling2D(pool_size=(3, 2))',
      [((3, 3, 2), 0)]),
    K('float32[11, 2]', 'avgpool1d pool=2 strides=3',
      'AveragePooling1D(pool_size=2, strides=3)',
      [((4, 2), 0)]),
    K('float32[5, 8, 2]', 'avgpool2d pool=2 stride=1x3',
      'AveragePooling2D(pool_size=2, strides=(1, 3))',
      [((4, 3, 2), 0)]),
    K('int64[6] vocab=3', 'embedding dim=5 vocab=11',
      'Embedding(11, 5)',
      [((6, 5), 55)]),
    K('float32[6, 3]', 'lstm units=4',
      'LSTM(units=4)',
      [((4,), 128)]),
    K('float32[5, 6, 7]', 'globalmaxpool',
      'GlobalMaxPooling2D()',
      [((7,), 0)]),
    K('float32[5, 6, 7]', 'globalavgpool',
      'GlobalAveragePooling2D()',
      [((7,), 0)]),
    K('float32[9, 4]', 'globalmaxpool',
      'GlobalMaxPooling1D()',
      [((4,), 0)]),
    K('float32[9, 4]', 'globalavgpool',
      'GlobalAveragePooling1D()',
      [((4,), 0)]),
    K('float32[3, 3, 64]', 'flatten',
      'Flatten()',
      [((576,), 0)]),
    K('float32[7, 5]', 'flatten',
      'Flatten()',
      [((35,), 0)]),
    K('float32[576]', 'dense 64 activation=relu',
      "Dense(64, activation='relu')",
      [((64,), 36928)]),
    K('float32[64]', 'dense 10 activation=softmax use_bias=false',
      "Dense(10, activation='softmax', use_bias=False)",
      [((10,), 640)]),
    K('float32[12]', 'dense units=5',
      'Dense(units=5)',
      [((5,), 65)]),
    K('float32[5, 7]', 'dense 4',
      'Dense(4)',
      [((5, 4), 32)]),
    K('float32[2, 3, 4]', 'dense 3',
      'Dense(3)',
      [((2, 3, 3), 15)]),
    K('float32[2, 3, 4, 5]', 'dense 6 use_bias=false',
      'Dense(6, use_bias=False)',
      [((2, 3, 4, 6), 30)]),
    K('float32[8, 8, 1]', 'conv2d 4 kernel=3; dense 5',
      'Conv2D(4, 3); Dense(5)',
      [((6, 6, 4), 40), ((6, 6, 5), 25)]),
    K('float32[10]', 'dropout 0.5',
      'Dropout(0.5)',
      [((10,), 0)]),
    K('float32[4, 4, 3]', 'dropout rate=0.25',
      'Dropout(rate=0.25)',
      [((4, 4, 3), 0)]),
    K('float32[10]', 'relu',
      "Activation('relu')",
      [((10,), 0)]),
    K('float32[10]', 'sigmoid',
      "Activation('sigmoid')",
      [((10,), 0)]),
    K('float32[3, 4]', 'tanh',
      "Activation('tanh')",
      [((3, 4), 0)]),
    K('float32[10]', 'softmax',
      "Activation('softmax')",
      [((10,), 0)]),
    K('int64[20] vocab=50', 'embedding 8',
      'Embedding(50, 8)',
      [((20, 8), 400)]),
    K('int64[20] vocab=50', 'embedding 8 vocab=100',
      'Embedding(100, 8)',
      [((20, 8), 800)]),
    K('int64[3]', 'embedding output_dim=4 input_dim=7',
      'Embedding(input_dim=7, output_dim=4)',
      [((3, 4), 28)]),
    K('int64[500] vocab=10000', 'embedding 32',
      'Embedding(10000, 32)',
      [((500, 32), 320000)]),
    K('int64[4, 5] vocab=9', 'embedding 2',
      'Embedding(9, 2)',
      [((4, 5, 2), 18)]),
    K('float32[500, 32]', 'rnn 32',
      'SimpleRNN(32)',
      [((32,), 2080)]),
    K('float32[10, 4]', 'rnn 8 return_sequences=true',
      'SimpleRNN(8, return_sequences=True)',
      [((10, 8), 104)]),
    K('float32[10, 4]', 'rnn 8 activation=relu',
      "SimpleRNN(8, activation='relu')",
      [((8,), 104)]),
    K('float32[6, 3]', 'rnn units=5',
      'SimpleRNN(units=5)',
      [((5,), 45)]),
    K('float32[500, 32]', 'lstm 32',
      'LSTM(32)',
      [((32,), 8320)]),
    K('float32[10, 4]', 'lstm 16 return_sequences=true',
      'LSTM(16, return_sequences=True)',
      [((10, 16), 1344)]),
    K('float32[500, 32]', 'gru 32',
      'GRU(32)',
      [((32,), 6336)]),
    K('float32[500, 32]', 'gru 32 reset_after=false',
      'GRU(32, reset_after=False)',
      [((32,), 6240)]),
    K('float32[10, 4]', 'gru 8 return_sequences=true reset_after=false',
      'GRU(8, return_sequences=True, reset_after=False)',
      [((10, 8), 312)]),
    K('float32[10, 4]', 'gru units=8 reset_after=true',
      'GRU(units=8, reset_after=True)',
      [((8,), 336)]),
    K('float32[10, 4]', 'lstm 16 return_sequences=true; lstm 8',
      'LSTM(16, return_sequences=True); LSTM(8)',
      [((10, 16), 1344), ((8,), 800)]),
    K('float32[12, 3]', 'rnn 8 return_sequences=true; rnn 8 return_sequences=true; rnn 4',
      'SimpleRNN(8, return_sequences=True); SimpleRNN(8, return_sequences=True); SimpleRNN(4)',
      [((12, 8), 96), ((12, 8), 136), ((4,), 52)]),
    K('int64[30] vocab=100', 'embedding 8; gru 8 return_sequences=true; lstm 4; dense 1 activation=sigmoid',
      "Embedding(100, 8); GRU(8, return_sequences=True); LSTM(4); Dense(1, activation='sigmoid')",
      [((30, 8), 800), ((30, 8), 432), ((4,), 208), ((1,), 5)]),
    K('int64[400] vocab=5000', 'embedding 16; conv1d 32 kernel=7 activation=relu; maxpool1d 5; conv1d 32 kernel=7 activation=relu; globalmaxpool; dense 1',
      "Embedding(5000, 16); Conv1D(32, 7, activation='relu'); MaxPooling1D(5); Conv1D(32, 7, activation='relu'); GlobalMaxPooling1D(); Dense(1)",
      [((400, 16), 80000), ((394, 32), 3616), ((78, 32), 0), ((72, 32), 7200), ((32,), 0), ((1,), 33)]),
    K('float32[28, 28, 1]', 'conv2d 32 kernel=3 activation=relu; maxpool2d 2; conv2d 64 kernel=3 activation=relu; maxpool2d 2; conv2d 64 kernel=3 activation=relu; flatten; dense 64 activation=relu; dense 10 activation=softmax',
      "Conv2D(32, 3, activation='relu'); MaxPooling2D(2); Conv2D(64, 3, activation='relu'); MaxPooling2D(2); Conv2D(64, 3, activation='relu'); Flatten(); Dense(64, activation='relu'); Dense(10, activation='softmax')",
      [((26, 26, 32), 320), ((13, 13, 32), 0), ((11, 11, 64), 18496), ((5, 5, 64), 0), ((3, 3, 64), 36928), ((576,), 0), ((64,), 36928), ((10,), 650)]),
    K('float32[32, 32, 3]', 'conv2d 32 kernel=3 padding=same activation=relu; conv2d 32 kernel=3 activation=relu; maxpool2d 2; dropout 0.25; conv2d 64 kernel=3 padding=same activation=relu; globalavgpool; dense 10 activation=softmax',
      "Conv2D(32, 3, padding='same', activation='relu'); Conv2D(32, 3, activation='relu'); MaxPooling2D(2); Dropout(0.25); Conv2D(64, 3, padding='same', activation='relu'); GlobalAveragePooling2D(); Dense(10, activation='softmax')",
      [((32, 32, 32), 896), ((30, 30, 32), 9248), ((15, 15, 32), 0), ((15, 15, 32), 0), ((15, 15, 64), 18496), ((64,), 0), ((10,), 650)]),
]

# Keras refuses these models (a ValueError at build time: a window larger than its input, an
# input of the wrong rank, an out-of-range argument); nnc must report an error for each too.
KERAS_ERRORS = [
    ('float32[4, 4, 1]', 'conv2d 8 kernel=7', 'Conv2D(8, 7)'),
    ('float32[4, 6, 1]', 'conv2d 8 kernel=5x2', 'Conv2D(8, (5, 2))'),
    ('float32[3, 2]', 'conv1d 4 kernel=5', 'Conv1D(4, 5)'),
    ('float32[4, 4, 1]', 'maxpool2d 5', 'MaxPooling2D(5)'),
    ('float32[3, 4]', 'avgpool1d 4', 'AveragePooling1D(4)'),
    ('float32[10, 8]', 'conv2d 4 kernel=3', 'Conv2D(4, 3)'),
    ('float32[5, 5, 3]', 'conv1d 4 kernel=3', 'Conv1D(4, 3)'),
    ('float32[5, 5, 3]', 'lstm 4', 'LSTM(4)'),
    ('float32[10]', 'rnn 4', 'SimpleRNN(4)'),
    ('float32[10]', 'maxpool1d 2', 'MaxPooling1D(2)'),
    ('float32[10]', 'globalavgpool', 'GlobalAveragePooling1D()'),
    ('float32[4, 4, 1]', 'conv2d 0 kernel=3', 'Conv2D(0, 3)'),
    ('float32[4]', 'dense 0', 'Dense(0)'),
    ('float32[4]', 'dropout 1.5', 'Dropout(1.5)'),
    ('float32[4, 4, 1]', 'conv2d 2 kernel=3 padding=full', "Conv2D(2, 3, padding='full')"),

]


def spec(input_decl: str, layers: str) -> str:
    lines = ["model t", f"input x: {input_decl}"] + [l.strip() for l in layers.split(";")]
    return "\n".join(lines) + "\n"


def case_id(c) -> str:
    return f"{c[0]} | {c[1]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_shapes_and_params_match_keras(case: K):
    result = check_source(spec(case.input, case.nnc))
    assert result.ok, [d.message for d in result.diagnostics]
    got = [(layer.output_shape, layer.params) for layer in result.model.layers]
    assert got == case.expected, f"nnc {got} != Keras {case.expected} for {case.keras}"
    assert result.model.total_params == sum(p for _, p in case.expected)


@pytest.mark.parametrize("case", KERAS_ERRORS, ids=case_id)
def test_nnc_refuses_what_keras_refuses(case):
    decl, layers, keras_call = case
    result = check_source(spec(decl, layers))
    assert not result.ok, f"Keras refuses {keras_call} on {decl}, nnc accepted it"
    assert result.model is None


def test_table_covers_every_kind_and_option():
    """A kind or option with no Keras-checked case is a hole in the table."""
    from nnc.kinds import KINDS

    text = " ; ".join(c.nnc for c in CASES)
    words = set(re.findall(r"[A-Za-z_0-9]+", text))
    for name, kind in KINDS.items():
        assert name in words, f"no case for kind {name}"
        for opt in kind.options:
            for key in (opt.name,) + opt.aliases:  # every spelling, positional ones as key=value too
                assert re.search(rf"\b{name}\b[^;]*\b{key}=", text), f"no case for {name} option {key}="

# --- re-verification against Keras -----------------------------------------------------------


def _keras_layers(keras, calls: str) -> list:
    return [eval(c.strip(), dict(vars(keras.layers))) for c in calls.split(";")]  # noqa: S307 (our own table)


def _keras_input(keras, decl: str):
    m = re.match(r"(\w+)\[([^\]]*)\]", decl)
    dtype, dims = m.group(1), tuple(int(d) for d in m.group(2).split(","))
    return keras.Input(shape=dims, dtype="int32" if dtype == "int64" else "float32")


def keras_table(keras, case) -> list:
    model = keras.Sequential([_keras_input(keras, case[0])] + _keras_layers(keras, case[2]))
    return [(tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers]


def _import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    return pytest.importorskip("keras")


@pytest.mark.reference
def test_table_matches_keras():
    keras = _import_keras()
    wrong = [(c.keras, c.input, c.expected, got) for c in CASES if (got := keras_table(keras, c)) != c.expected]
    assert not wrong, wrong


@pytest.mark.reference
def test_keras_refuses_the_error_cases():
    keras = _import_keras()
    accepted = []
    for case in KERAS_ERRORS:
        try:
            keras_table(keras, case)
        except ValueError:
            continue
        accepted.append(case)
    assert not accepted, accepted


if __name__ == "__main__":  # print the table afresh from Keras
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras as _keras

    for c in CASES:
        print(f"    K({c.input!r}, {c.nnc!r},\n      {c.keras!r},\n      {keras_table(_keras, c)!r}),")
