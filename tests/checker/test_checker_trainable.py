"""Trainable and non-trainable parameters, as Keras's model.summary() reports them: `nnc summary`
(text and JSON) shows both, and `expect trainable_params` / `expect non_trainable_params` check
them. Batchnorm's moving mean and variance are Keras's non-trainable weights.

The figures below are those Keras 3 (KERAS_BACKEND=torch) prints for the same model:
    Total params: 682 (2.66 KB)
    Trainable params: 634 (2.48 KB)
    Non-trainable params: 48 (192.00 B)
`test_keras_summary_prints_the_same_figures` (marked `reference`) builds it again and reads them
from model.summary().
"""

from __future__ import annotations

import json
import os
import re

import pytest

from nnc import check_source
from nnc.cli import main

LAYERS = """\
conv2d 8 kernel=3 padding=same use_bias=false   # 3*3*3*8 = 216
batchnorm                                       # gamma, beta: 16 trainable; moving mean, variance: 16 not
relu
separable_conv2d 16 kernel=3 use_bias=false     # 3*3*8 + 8*16 = 200
batchnorm                                       # 32 trainable, 32 not
relu
globalavgpool
dense 10 activation=softmax                     # 16*10 + 10 = 170
"""
KERAS_TOTAL, KERAS_TRAINABLE, KERAS_NON_TRAINABLE = 682, 634, 48


def bn_spec(*expects: str) -> str:
    return "model bn_net\ninput image: float32[16, 16, 3]\n" + LAYERS + "".join(e + "\n" for e in expects)


def test_model_counts_trainable_and_non_trainable_apart():
    model = check_source(bn_spec()).model
    assert (model.total_params, model.trainable_params, model.non_trainable_params) == \
        (KERAS_TOTAL, KERAS_TRAINABLE, KERAS_NON_TRAINABLE)
    bn = model.layers[1]
    assert (bn.params, bn.trainable_params, bn.non_trainable_params) == (32, 16, 16)
    assert set(model.trainable_weights()) >= {"batchnorm_1.gamma", "batchnorm_1.beta"}
    assert not any("moving" in w for w in model.trainable_weights())


def test_summary_text_and_json_show_both(tmp_path, capsys):
    path = tmp_path / "bn_net.nnspec"
    path.write_text(bn_spec())
    assert main(["summary", str(path)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^ Total params: 682 ", text, re.M)
    assert re.search(r"^ Trainable params: 634 ", text, re.M)
    assert re.search(r"^ Non-trainable params: 48 ", text, re.M)
    assert main(["summary", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) == (682, 634, 48)
    per_layer = [(l["params"], l["trainable_params"]) for l in data["layers"]]
    assert per_layer == [(216, 216), (32, 16), (0, 0), (200, 200), (64, 32), (0, 0), (0, 0), (170, 170)]


@pytest.mark.parametrize("expect", [
    "expect params == 682",
    "expect trainable_params == 634",
    "expect non_trainable_params == 48",
    "expect trainable_params <= 634",
    "expect non_trainable_params > 0",
    "expect trainable_params != 682",
])
def test_expectations_that_hold_are_clean(expect):
    result = check_source(bn_spec(expect))
    assert result.ok and result.diagnostics == [], [d.message for d in result.diagnostics]


@pytest.mark.parametrize("expect, message", [
    ("expect trainable_params == 682", "expected trainable params == 682, but the model has 634"),
    ("expect non_trainable_params == 0", "expected non-trainable params == 0, but the model has 48"),
    ("expect non_trainable_params < 48", "expected non-trainable params < 48, but the model has 48"),
    ("expect params == 634", "expected params == 634, but the model has 682"),
])
def test_a_failed_expectation_is_an_error_at_its_line(expect, message):
    result = check_source(bn_spec(expect), "bn_net.nnspec")
    assert not result.ok
    [d] = result.errors
    assert (d.code, d.message, d.span.line) == ("expect-failed", message, 3 + LAYERS.count("\n"))


def test_a_model_without_batchnorm_has_no_non_trainable_params():
    text = "model m\ninput x: float32[8]\ndense 4\nlayernorm\nexpect non_trainable_params == 0\nexpect trainable_params == 44\n"
    result = check_source(text)
    assert result.ok and result.diagnostics == [], [d.message for d in result.diagnostics]


def test_misspelt_expectation_names_the_right_one():
    result = check_source(bn_spec("expect non_trainable_param == 48"))
    [d] = result.errors
    assert d.code == "bad-expect" and "did you mean 'non_trainable_params'" in d.message


def test_expectation_takes_an_integer():
    result = check_source(bn_spec("expect non_trainable_params == [48]"))
    [d] = result.errors
    assert d.code == "bad-expect" and "takes an integer" in d.message


def test_check_exits_1_on_a_failed_trainable_expectation(tmp_path, capsys):
    path = tmp_path / "bn_net.nnspec"
    path.write_text(bn_spec("expect trainable_params == 682"))
    assert main(["check", str(path)]) == 1
    assert "expected trainable params == 682, but the model has 634" in capsys.readouterr().out


@pytest.mark.reference
def test_keras_summary_prints_the_same_figures():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    L = keras.layers
    km = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same", use_bias=False), L.BatchNormalization(), L.Activation("relu"),
        L.SeparableConv2D(16, 3, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
        L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax"),
    ])
    lines: list[str] = []
    km.summary(print_fn=lambda line, line_break=True: lines.append(line))
    text = "\n".join(lines)

    def figure(label):
        return int(re.search(rf"^\s*{label}: ([\d,]+)", text, re.M).group(1).replace(",", ""))

    assert (figure("Total params"), figure("Trainable params"), figure("Non-trainable params")) == \
        (KERAS_TOTAL, KERAS_TRAINABLE, KERAS_NON_TRAINABLE)
    model = check_source(bn_spec()).model
    keras_layers = km.layers
    assert [(len(l.trainable_weights), len(l.non_trainable_weights)) for l in keras_layers] == \
        [(len(l.weights) - len(l.non_trainable), len(l.non_trainable)) for l in model.layers]
