"""Keras's names in nnc's diagnostics (issue 8): a name Keras has and nnc does not is said to be
Keras's, never taken for a typo of something else; Keras's class names of nnc's kinds get "did
you mean" the kind; a Keras call written as Python gets the nnc line to write instead.

The translations are checked against Keras's own numbers: every Keras call of the Keras table
(tests/checker/test_checker_keras_table.py, whose numbers `pytest -m reference` rebuilds in Keras)
is translated, and the nnc line must give that call's Keras shapes and parameter counts. The
names in the tables are checked against Keras itself where it is installed (marked reference).
"""

from __future__ import annotations

import inspect
import os
import warnings

import pytest
from test_checker_keras_table import CASES, spec

from nnc import check_source
from nnc.lang.keras_names import (
    KERAS_ACTIVATIONS_NOT_IN_NNC,
    KERAS_LAYERS_NOT_IN_NNC,
    KERAS_LOSSES_NOT_IN_NNC,
    KERAS_OPTIMIZERS_NOT_IN_NNC,
    KERAS_OPTIONS_NOT_IN_NNC,
    KERAS_TO_KIND,
    _signature,
    translate,
)
from nnc.lang.kinds import ACTIVATIONS, KINDS, is_activation_kind
from nnc.lang.parser import BLOCK_WORDS


def codes(text: str) -> list[tuple[int, str]]:
    return [(d.span.line, d.code) for d in check_source(text).diagnostics]


def one_layer(layer: str, decl: str = "float32[20, 8]") -> list:
    return [d for d in check_source(f"model m\ninput x: {decl}\n{layer}\n").diagnostics if d.span.line == 3]


# --- translations against Keras's numbers -------------------------------------------------------

TRANSLATABLE = [c for c in CASES if not any(w in c.keras for w in ("SelfAttention", "PositionEmbedding", "lambda"))]


def test_most_of_the_keras_table_is_translated():
    assert len(TRANSLATABLE) >= 150


def test_translated_keras_calls_give_keras_shapes_and_counts():
    wrong = []
    for case in TRANSLATABLE:
        calls = [translate(call) for call in case.keras.split(";")]
        if not all(c is not None and c.line is not None for c in calls):
            wrong.append((case.keras, "not translated"))
            continue
        nnc = "; ".join(c.line for c in calls)
        result = check_source(spec(case.input, nnc))
        if not result.ok:
            wrong.append((case.keras, nnc, [d.message for d in result.diagnostics]))
            continue
        got = [(layer.output_shape, layer.trainable_params, layer.non_trainable_params) for layer in result.model.layers]
        if got != case.expected:
            wrong.append((case.keras, nnc, got, "Keras:", case.expected))
    assert not wrong, wrong


@pytest.mark.parametrize("call, line", [
    ("Conv2D(32, (3,3), activation='relu')", "conv2d 32 kernel=3 activation=relu"),
    ("Conv2D(8, kernel_size=(3, 5), strides=(2, 1), padding='same')", "conv2d 8 kernel=3x5 stride=2x1 padding=same"),
    ("Flatten()", "flatten"),
    ("LSTM(32, return_sequences=True)", "lstm 32 return_sequences=true"),
    ('Dense(10, activation="softmax")', "dense 10 activation=softmax"),
    ("layers.Dense(64)", "dense 64"),
    ("model.add(Dense(10))", "dense 10"),
    ("x = layers.Dropout(0.5)(x)", "dropout 0.5"),
    ("    keras.layers.MaxPooling2D(),", "maxpool2d 2"),
    ("Dense(10, name='out', use_bias=False)", "out: dense 10 use_bias=false"),
    ("out: Dense(10, activation='softmax')", "out: dense 10 activation=softmax"),  # nnc's naming, Keras's call
    ("Embedding(10000, 64)", "embedding 64 vocab=10000"),
    ("Bidirectional(LSTM(8), merge_mode='sum')", "lstm 8 bidirectional=true merge=sum"),
    ("Bidirectional(GRU(8), merge_mode=None)", "gru 8 bidirectional=true"),  # was merge=None, not nnc
    ("layers.ReLU(max_value=6)", "relu6"),  # MobileNetV2's ReLU6 (was relu, dropping the cap)
    ("layers.ReLU(max_value=5)", "relu"),  # no nnc spelling: a note says what was left out
    ("TimeDistributed(Dense(4))", "dense 4"),
    ("Dense(10, kernel_regularizer=regularizers.l2(1e-4))", "dense 10 l2=0.0001"),
    ("keras.Input(shape=(28, 28, 1))", "input x: float32[28, 28, 1]"),
    ("Activation('relu')", "relu"),
    ("Conv2D(filters=8)", "conv2d 8 kernel=KERNEL"),  # what the call lacks is a placeholder
])
def test_keras_call_translations(call, line):
    assert translate(call).line == line


def test_not_a_keras_call_is_not_translated():
    for text in ("foo(3)", "dense 10", "conv2d 32 kernel=(3, 3", "Dense(*args)", "Sequential([Dense(10)])",
                 "x" * 5000 + "(", "Dense(" + "(" * 500 + ")" * 501):
        got = translate(text)
        assert got is None, (text, got)


def test_keras_calls_in_a_spec_are_one_error_a_line():
    text = ("model m\ninput image: float32[28, 28, 1]\nConv2D(32, (3,3), activation='relu')\nFlatten()\n"
            "LSTM(32, return_sequences=True)\nDense(10, activation=\"softmax\")\nlayers.Dense(64)\nmodel.add(Dense(10))\n"
            "Dense(10)\n")
    assert codes(text) == [(line, "keras-call") for line in range(3, 10)]


def test_a_called_keras_layer_nnc_lacks_is_keras_only():
    assert [d.code for d in one_layer("Lambda(lambda t: t * 2)")] == ["keras-only"]
    assert [d.code for d in one_layer("Activation('exponential')")] == ["keras-only"]


# --- names Keras has and nnc does not --------------------------------------------------------------


def test_the_tables_name_nothing_nnc_has():
    options = {key for kind in KINDS.values() for o in kind.options for key in (o.name,) + o.aliases}
    assert not set(KERAS_OPTIONS_NOT_IN_NNC) & options
    assert not set(KERAS_ACTIVATIONS_NOT_IN_NNC) & set(ACTIVATIONS)
    # Keras's Attention (dot-product, over a query and a value) is not nnc's attention (MultiHeadAttention)
    assert {name.lower() for name in KERAS_LAYERS_NOT_IN_NNC} & set(KINDS) == {"attention"}
    assert set(KERAS_TO_KIND.values()) <= set(KINDS)


def test_keras_layers_nnc_lacks_are_said_to_be_keras():
    for name in KERAS_LAYERS_NOT_IN_NNC:
        for word in (name, name.lower()):
            if word in KINDS or word in BLOCK_WORDS:  # nnc's attention is MultiHeadAttention; add { ... } a block
                continue
            diags = one_layer(f"{word} 4")
            assert [(d.code, d.message) for d in diags] == [("keras-only", f"Keras's {name} is not in nnc")], word


def test_bidirectional_names_nnc_spelling():
    (d,) = one_layer("Bidirectional")
    assert "lstm 64 bidirectional=true" in d.help


def test_keras_activations_nnc_lacks_are_said_to_be_keras():
    for name in KERAS_ACTIVATIONS_NOT_IN_NNC:
        for layer in (f"dense 4 activation={name}", f"lstm 4 recurrent_activation={name}", name):
            diags = one_layer(layer)
            assert [(d.code, d.message) for d in diags] == [
                ("keras-only", f"Keras's activation '{name}' is not in nnc")], layer


def test_keras_options_nnc_lacks_are_said_to_be_keras():
    for name in KERAS_OPTIONS_NOT_IN_NNC:
        diags = one_layer(f"lstm 4 {name}=1")
        assert [(d.code, d.message) for d in diags] == [("keras-only", f"Keras's {name} option is not in nnc")], name


def test_keras_losses_and_optimizers_nnc_lacks():
    for loss in KERAS_LOSSES_NOT_IN_NNC:
        text = f"model m\ninput x: float32[4]\ndense 1\ntrain {{\n  loss {loss}\n}}\n"
        assert codes(text) == [(5, "keras-only")], loss
    for opt in KERAS_OPTIMIZERS_NOT_IN_NNC:
        text = f"model m\ninput x: float32[4]\ndense 1\ntrain {{\n  optimizer {opt}\n}}\n"
        assert codes(text) == [(5, "keras-only")], opt


# --- every activation of nnc is accepted wherever an activation is ------------------------------


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_is_accepted_as_option(act):
    text = (f"model m\ninput x: float32[12, 12, 2]\nconv2d 2 kernel=3 activation={act}\nreshape [-1, 2]\n"
            f"lstm 3 activation={act} recurrent_activation={act} return_sequences=true\n"
            f"gru 3 activation={act} recurrent_activation={act}\ndense 4 activation={act}\n")
    assert codes(text) == []


def test_every_activation_kind_is_accepted_as_layer():
    acts = [k for k in KINDS if is_activation_kind(k)]
    assert {"leaky_relu", "elu", "prelu"} <= set(acts) and set(ACTIVATIONS) <= set(acts)
    text = "model m\ninput x: float32[8]\n" + "\n".join(acts) + "\n"
    result = check_source(text)
    assert result.ok and len(result.model.layers) == len(acts), [d.message for d in result.diagnostics if d.is_error]


def test_leaky_relu_is_never_a_typo_of_relu():
    assert one_layer("dense 4 activation=leaky_relu") == []
    assert one_layer("leaky_relu negative_slope=0.1") == []
    (d,) = one_layer("dense 4 activation=leaky_rleu")
    assert "leaky_relu" in d.message


# --- Keras's class names of nnc's kinds ---------------------------------------------------------


def test_keras_class_names_of_kinds_suggest_the_kind():
    assert {"BatchNormalization", "SeparableConv2D", "LeakyReLU", "MultiHeadAttention", "ZeroPadding2D"} <= set(KERAS_TO_KIND)
    for name, kind in KERAS_TO_KIND.items():
        diags = one_layer(name)
        assert [(d.code, d.message) for d in diags] == [
            ("unknown-layer", f"unknown layer '{name}'; did you mean '{kind}'?")], name


# --- the names against Keras itself ---------------------------------------------------------------


def _import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    return pytest.importorskip("keras")


KERAS_HUB = {"TokenAndPositionEmbedding", "PositionEmbedding"}  # keras_hub's layers, not keras.layers


@pytest.mark.reference
def test_every_name_is_keras_own():
    keras = _import_keras()
    layers = set(dir(keras.layers))
    assert set(KERAS_LAYERS_NOT_IN_NNC) - KERAS_HUB <= layers, set(KERAS_LAYERS_NOT_IN_NNC) - KERAS_HUB - layers
    assert set(KERAS_TO_KIND) - KERAS_HUB <= layers, set(KERAS_TO_KIND) - KERAS_HUB - layers
    assert set(KERAS_ACTIVATIONS_NOT_IN_NNC) <= set(dir(keras.activations))
    for loss in KERAS_LOSSES_NOT_IN_NNC:
        assert hasattr(keras.losses, loss) or keras.losses.get(loss)  # get raises for a name Keras does not know
    optimizers = {n.lower() for n in dir(keras.optimizers)}
    assert set(KERAS_OPTIMIZERS_NOT_IN_NNC) <= optimizers
    params = set()
    for name in layers:
        cls = getattr(keras.layers, name)
        if inspect.isclass(cls):
            params |= set(inspect.signature(cls.__init__).parameters)
    for key in ("input_shape", "input_length"):  # taken by every layer through **kwargs: a layer accepts it
        keras.layers.Embedding(10, 4, **{key: (3,) if key == "input_shape" else 3})
        params.add(key)
    keras2 = {"batch_input_shape", "batch_size"}  # tf.keras 2's layer arguments, still met in tutorials
    assert set(KERAS_OPTIONS_NOT_IN_NNC) - keras2 <= params, set(KERAS_OPTIONS_NOT_IN_NNC) - keras2 - params


@pytest.mark.reference
def test_positional_values_are_read_in_keras_order():
    """A Keras call's positional values are named by the class's own signature."""
    keras = _import_keras()
    wrong = {}
    for name in set(KERAS_TO_KIND) - KERAS_HUB:
        params = [p for p in inspect.signature(getattr(keras.layers, name).__init__).parameters if p != "self"]
        sig = _signature(name)
        if tuple(params[: len(sig)]) != sig:
            wrong[name] = (sig, params)
    assert not wrong, wrong


def test_python_warnings_of_a_line_never_reach_the_user():
    """ast.parse warns on `1if` or "\\d" (SyntaxWarning, DeprecationWarning): a check prints none of it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for line in ("Dense(1if 1 else 2)", "Dense('\\d')", "Dense(0x1for)", "model.add(Dense(1x))"):
            check_source(f"model m\ninput x: float32[4]\n{line}\n")
            translate(line)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("layer, key, owners", [
    ("conv1d_transpose 4 kernel=3 dilation=2", "dilation", "conv1d"),  # was "did you mean 'activation'?"
    ("rnn 4 recurrent_activation=sigmoid", "recurrent_activation", "lstm, gru"),  # was "did you mean 'activation'?"
    ("dense 4 dropout=0.5", "dropout", "rnn"),
])
def test_an_option_of_other_kinds_is_said_to_be_theirs_not_a_typo(layer, key, owners):
    (d,) = one_layer(layer)
    assert d.code == "unknown-option" and "did you mean" not in d.message
    assert f"has no option '{key}': it is an option of " in d.message and owners in d.message
    assert d.span.col == layer.index(key) + 1


def test_a_real_typo_still_gets_did_you_mean():
    (d,) = one_layer("dense 4 activaton=relu")
    assert "did you mean 'activation'?" in d.message


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_merge_without_bidirectional_is_an_error_at_merge(kind):
    (d,) = one_layer(f"{kind} 4 merge=sum")
    assert d.code == "bad-value" and "bidirectional=true" in d.help
    assert d.span.col == len(f"{kind} 4 ") + 1
    assert one_layer(f"{kind} 4 merge=sum bidirectional=true") == []
    assert one_layer(f"{kind} 4 merge=concat") == []


def test_depthwise_filters_as_positional_is_one_error_that_explains_the_positional():
    # `depthwise_conv2d 16 kernel=3`: 16 is taken as Keras's kernel_size; one error, no noise
    # from a 16x16 kernel, and the rest of the model is checked with kernel=3
    ds = check_source("model m\ninput x: float32[8, 8, 3]\ndepthwise_conv2d 16 kernel=3\nflatten\n"
                      "expect output == [1]\n").diagnostics
    assert [(d.span.line, d.code) for d in ds] == [(3, "duplicate-option"), (5, "expect-failed")]
    assert "positional value is its kernel" in ds[0].help and "no filters" in ds[0].help
    assert "[108]" in ds[1].message  # 6*6*3 with kernel=3
    (d1, d2) = one_layer("dense 4 units=5 units=6")
    assert "positional value is its units" in d1.help and d2.help == "first given at line 3, column 9"


@pytest.mark.parametrize("layer, decl", [
    ("upsampling2d 2 interpolation=bicubic", "float32[4, 4, 2]"),  # was a plain bad-value
    ("upsampling2d 2 interpolation=area", "float32[4, 4, 2]"),
    ("lstm 4 bidirectional=true merge=None", "float32[8, 4]"),  # Bidirectional(merge_mode=None)
])
def test_keras_option_values_nnc_lacks_are_said_to_be_keras(layer, decl):
    (d,) = one_layer(layer, decl)
    assert d.code == "keras-only" and d.message.startswith("Keras's ") and "did you mean" not in d.message
    assert d.span.col == layer.index("=", layer.index("interpolation" if "interp" in layer else "merge")) + 2


def test_a_misspelt_option_value_is_still_a_typo():
    (d,) = one_layer("upsampling2d 2 interpolation=bilnear", "float32[4, 4, 2]")
    assert d.code == "bad-value" and "did you mean 'bilinear'?" in d.message


def test_bidirectional_merge_mode_none_is_a_note_and_the_line_checks():
    call = translate("Bidirectional(GRU(8), merge_mode=None)")
    assert any("merge_mode=None" in n for n in call.notes)
    assert check_source(f"model m\ninput x: float32[6, 3]\n{call.line}\n").ok
