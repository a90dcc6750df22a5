"""`nnc export keras` and `nnc import`, with Keras 3 (backend torch) as the reference: what nnc
writes, keras.saving.load_model opens and computes nnc's outputs from; what Keras writes
(.keras and legacy .h5), nnc imports as a spec that checks and computes Keras's outputs.
Hostile files (not a zip, a huge or malformed config, a Lambda's bytecode) are refused or
reported, never run."""

from __future__ import annotations

import base64
import json
import marshal
import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ["KERAS_BACKEND"] = "torch"
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "onnx"))

from block_cases import spec_text  # noqa: E402
from onnx_cases import OPTION_SPECS  # noqa: E402

from nnc.cli import main as nnc  # noqa: E402
from nnc.engines.numpy.network import Network  # noqa: E402
from nnc.lang.checker import check_file, check_source  # noqa: E402
from nnc.lang.model import Block  # noqa: E402
from nnc.tools.keras_io import keras_auto_names  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.nnspec"))
NO_KERAS_LAYER = {"position_embedding"}  # keras_hub's, not a layer of Keras itself


def weights_for(model, seed=0):
    """Random weights at Keras's initial scale, with biases and statistics not zero."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in model.weight_shapes().items():
        fan = shape[-2] if len(shape) >= 2 else max(shape[-1], 1)
        w = rng.uniform(-1, 1, shape) * np.sqrt(1.0 / fan) if len(shape) >= 2 else rng.uniform(-0.1, 0.1, shape)
        if name.endswith(("moving_variance", "gamma")):
            w = np.abs(w) + 0.5
        out[name] = w.astype(np.float32)
    return out


def input_for(model, batch=2, seed=1):
    rng = np.random.default_rng(seed)
    shape = (batch, *model.input.shape)
    if model.input.dtype == "int64":
        vocab = min([model.input.vocab] + [l.options["vocab"] for l in model.layers if l.kind == "embedding"])
        return rng.integers(0, vocab, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def keras_run(km, x):
    return np.asarray(keras.ops.convert_to_numpy(km(x, training=False)))


def close(actual, expected, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * max(scale, 1.0), err_msg=what)


def structure(nodes):
    """The checked tree as plain data: layers (name, kind, options, shapes, weights) and merge
    blocks (merge, axis, branches); `repeat` is its expanded body, as in Keras."""
    out = []
    for n in nodes:
        if isinstance(n, Block):
            if n.merge is None:
                out.extend(structure(n.branches[0]))
            else:
                out.append((n.name, n.merge, n.options.get("axis", -1), [structure(b) for b in n.branches]))
        else:  # swish is silu's other name (LANGUAGE.md); Keras saves both as silu
            opts = {k: "silu" if v == "swish" else v for k, v in n.options.items()}
            out.append((n.name, "silu" if n.kind == "swish" else n.kind, opts, n.input_shape, n.output_shape,
                        n.weights))
    return out


def run_import(src, tmp_path, *extra):
    spec, w = tmp_path / "imported.nnspec", tmp_path / "imported.npz"
    rc = nnc(["import", str(src), "-o", str(spec), "--weights-out", str(w), *extra])
    assert rc == 0
    r = check_file(str(spec))
    assert r.ok and not r.warnings or r.ok, [d.message for d in r.diagnostics]
    with np.load(w) as d:
        weights = {k: d[k] for k in d.files}
    return r, weights


def round_trip(model, source_path, tmp_path):
    w = weights_for(model)
    np.savez(tmp_path / "w.npz", **w)
    out = tmp_path / "m.keras"
    assert nnc(["export", "keras", str(source_path), "--weights", str(tmp_path / "w.npz"), "-o", str(out)]) == 0
    km = keras.saving.load_model(str(out))
    x = input_for(model)
    expected = Network(model, w).predict(x)
    close(keras_run(km, x), expected, f"{model.name}: Keras on the exported file")
    km.save(str(tmp_path / "by_keras.keras"))  # Keras's own writing of the same model
    r, w2 = run_import(tmp_path / "by_keras.keras", tmp_path)
    assert structure(r.model.body) == structure(model.body)
    # a Keras file knows the embeddings' vocabularies, not the input's own vocab=
    assert (r.model.input.name, r.model.input.dtype, r.model.input.shape) == (model.input.name, model.input.dtype,
                                                                              model.input.shape)
    assert r.model.total_params == model.total_params
    assert w2.keys() == w.keys() and all(np.array_equal(w2[k], w[k]) for k in w)
    close(Network(r.model, w2).predict(x), expected, f"{model.name}: the imported spec")
    assert f"expect params == {model.total_params}" in r.source


def small_copy(path: Path, tmp_path: Path) -> Path:
    """A recurrent spec with its token sequences cut to 8 steps (its layers and options as they
    are, its expect lines left out): Keras's torch LSTM with recurrent_dropout runs step by step
    in Python, a minute for imdb's 200 steps."""
    text = path.read_text()
    if not re.search(r"(?m)^\s*(\w+:\s*)?(lstm|gru|rnn)\b", text):
        return path
    text = re.sub(r"(input\s+\w+:\s*int64\[)\d+(\])", r"\g<1>8\2", text)
    text = re.sub(r"(?m)^\s*expect .*$", "", text)
    out = tmp_path / path.name
    out.write_text(text)
    return out


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_round_trips_through_keras(path, tmp_path, capsys):
    path = small_copy(path, tmp_path)
    model = check_file(str(path)).model
    if any(l.kind in NO_KERAS_LAYER for l in model.layers):
        # no Keras layer computes it, so no .keras file can hold it: refused by name, exit 1
        assert nnc(["export", "keras", str(path), "-o", str(tmp_path / "m.keras")]) == 1
        assert "position_embedding has no Keras 3 layer" in capsys.readouterr().err
        assert not (tmp_path / "m.keras").exists()
        return
    round_trip(model, path, tmp_path)


@pytest.mark.parametrize("name", ["nested", "rank1_multi_read", "transformer_repeat", "subtract", "concat_three_axis1",
                                  "embedding_branches", "ends_in_concat"])
def test_block_spec_round_trips_through_keras(name, tmp_path):
    src = tmp_path / f"{name}.nnspec"
    src.write_text(spec_text(name))
    round_trip(check_file(str(src)).model, src, tmp_path)


@pytest.mark.parametrize("group", range(4))
def test_every_kind_and_option_round_trips_through_keras(group, tmp_path, capsys):
    """The one-spec-per-option cases of tests/onnx (every kind, option and activation), a
    quarter per test."""
    names = sorted(OPTION_SPECS)[group::4]
    for name in names:
        d = tmp_path / name
        d.mkdir()
        src = d / f"{name}.nnspec"
        src.write_text(f"model {name}\n{OPTION_SPECS[name]}\n")
        model = check_file(str(src)).model
        refused = [l.kind for l in model.layers if l.kind in NO_KERAS_LAYER] or (
            ["gelu_tanh"] if "gelu_tanh" in OPTION_SPECS[name] else [])
        if refused:
            assert nnc(["export", "keras", str(src), "-o", str(d / "m.keras")]) == 1
            assert refused[0] in capsys.readouterr().err and not (d / "m.keras").exists()
            if refused[0] != "gelu_tanh":
                continue
            src.write_text(src.read_text().replace("gelu_tanh", "gelu"))  # the rest of the spec still round-trips
            model = check_file(str(src)).model
        round_trip(model, src, d)


def _keras_models():
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="picture")
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(6, (3, 1), padding="same", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])
    a = L.MaxPooling2D(2)(x)
    b = L.Conv2D(4, 1, strides=2, activation="tanh")(x)
    b = L.LeakyReLU()(b)
    x = L.Concatenate()([a, b])
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(5, activation="softmax")(x)
    functional = keras.Model(inp, x, name="functional_add_concat")

    sequential = keras.Sequential([
        keras.Input((12, 12, 2)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(), L.ZeroPadding2D(((1, 0), (2, 1))),
        L.SeparableConv2D(5, 3, padding="same"), L.ReLU(max_value=6.0), L.Flatten(), L.Dropout(0.3),
        L.Dense(7, activation="gelu"), L.Activation("softsign"), L.Dense(3)], name="seq_conv")

    text = keras.Sequential([
        keras.Input((10,), dtype="int32"), L.Embedding(30, 6), L.Conv1D(5, 3, padding="causal"),
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"), L.GRU(3, reset_after=False, return_sequences=True),
        L.SimpleRNN(3, go_backwards=True), L.Dense(2, activation="sigmoid")], name="seq_text")

    tin = keras.Input((6, 8))
    h = L.LayerNormalization(epsilon=1e-5)(tin)
    h = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5)(h, h, use_causal_mask=True)
    h = L.Add()([tin, h])
    h = L.Subtract()([L.Dense(8)(h), h])
    h = L.Multiply()([L.Dense(8, activation="sigmoid")(h), h])
    h = L.GlobalMaxPooling1D()(h)
    attention = keras.Model(tin, h, name="functional_attention")
    return [functional, sequential, text, attention]


def test_keras_built_models_import_with_keras_outputs(tmp_path):
    for km in _keras_models():
        x = np.random.default_rng(0).standard_normal((2, *km.input_shape[1:])).astype(np.float32)
        if km.name == "seq_text":
            x = np.random.default_rng(0).integers(0, 30, (2, 10)).astype(np.int64)
        for layer in km.layers:  # weights off Keras's initialization, biases included
            layer.set_weights([np.random.default_rng(len(v.shape)).uniform(-0.5, 0.5, v.shape).astype(np.float32)
                               + (0.6 if "variance" in v.path else 0.0) for v in layer.weights])
        km.save(str(tmp_path / f"{km.name}.keras"))
        r, w = run_import(tmp_path / f"{km.name}.keras", tmp_path)
        assert r.model.total_params == km.count_params()
        assert r.model.name == km.name
        close(Network(r.model, w).predict(x), keras_run(km, x), km.name)
        if km.name == "functional_add_concat":  # Keras's names kept, Keras's settings as options
            assert "picture" in r.source and "kernel=3x1" in r.source and "l2=0.0001" in r.source
            assert any(isinstance(n, Block) and n.merge == "concat" for n in r.model.body)


def test_legacy_h5_imports(tmp_path):
    km = _keras_models()[0]
    km.save(str(tmp_path / "legacy.h5"))
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    r, w = run_import(tmp_path / "legacy.h5", tmp_path)
    close(Network(r.model, w).predict(x), keras_run(km, x), "legacy h5")
    km.save(str(tmp_path / "new.keras"))
    r2, _ = run_import(tmp_path / "new.keras", tmp_path)
    assert structure(r2.model.body) == structure(r.model.body)


def _unsupported(tmp_path, layer, capsys):
    km = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="first"), layer,
                           keras.layers.Dense(2, name="last")], name="odd")
    km.save(str(tmp_path / "odd.keras"))
    spec = tmp_path / "odd.nnspec"
    rc = nnc(["import", str(tmp_path / "odd.keras"), "-o", str(spec), "--weights-out", str(tmp_path / "w.npz")])
    return rc, capsys.readouterr().err, spec.read_text()


def test_unsupported_layer_is_reported_and_marked(tmp_path, capsys):
    rc, err, text = _unsupported(tmp_path, keras.layers.GaussianNoise(0.25, name="noise"), capsys)
    assert rc == 1
    assert "noise (GaussianNoise): nnc has no such layer" in err and '"stddev": 0.25' in err
    assert "# unsupported: noise (GaussianNoise)" in text
    assert "first: dense 4" in text.replace("  ", " ") and "last:" in text
    assert not (tmp_path / "w.npz").exists()


def test_unsupported_option_is_reported(tmp_path, capsys):
    rc, err, text = _unsupported(tmp_path, keras.layers.Dense(3, use_bias=True, activation="exponential", name="odd_act"),
                                 capsys)
    assert rc == 1 and "odd_act (Dense): activation \"exponential\"" in err


def test_lambda_bytecode_is_reported_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    code = compile(f"open({str(marker)!r}, 'w').write('x')", "<evil>", "exec")
    lam = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
           "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                   "config": {"code": base64.b64encode(marshal.dumps(code)).decode(),
                                                              "defaults": None, "closure": None}}}}
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "x"}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 3}}, lam]}}
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
    rc = nnc(["import", str(tmp_path / "evil.keras"), "-o", str(tmp_path / "evil.nnspec")])
    err = capsys.readouterr().err
    assert rc == 1 and "evil (Lambda): nnc has no such layer" in err
    assert not marker.exists()
    assert "# unsupported: evil (Lambda)" in (tmp_path / "evil.nnspec").read_text()


def test_hostile_files_are_refused(tmp_path, capsys, monkeypatch):
    import nnc.tools.keras_io as kio

    (tmp_path / "plain.keras").write_text("not a zip at all")
    assert nnc(["import", str(tmp_path / "plain.keras"), "-o", str(tmp_path / "a.nnspec")]) == 1
    assert "neither a Keras 3 .keras archive" in capsys.readouterr().err

    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        z.writestr("config.json", "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [" + "[" * 100000)
    assert nnc(["import", str(tmp_path / "bad.keras"), "-o", str(tmp_path / "a.nnspec")]) == 1
    assert "config.json is not valid JSON" in capsys.readouterr().err

    with zipfile.ZipFile(tmp_path / "wrong.keras", "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": [{"class_name": 3}]}}))
    assert nnc(["import", str(tmp_path / "wrong.keras"), "-o", str(tmp_path / "a.nnspec")]) == 1
    assert "config is malformed" in capsys.readouterr().err

    monkeypatch.setattr(kio, "MAX_CONFIG_BYTES", 1000)  # a huge config: refused from its declared size, unread
    with zipfile.ZipFile(tmp_path / "huge.keras", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", " " * 5000 + "{}")
    assert nnc(["import", str(tmp_path / "huge.keras"), "-o", str(tmp_path / "a.nnspec")]) == 1
    assert "refused unread" in capsys.readouterr().err
    assert not (tmp_path / "a.nnspec").exists()


def test_import_refuses_to_overwrite_its_input(tmp_path, capsys):
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(str(tmp_path / "m.keras"))
    before = (tmp_path / "m.keras").read_bytes()
    assert nnc(["import", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.keras")]) == 2
    assert "which writing would destroy" in capsys.readouterr().err
    assert (tmp_path / "m.keras").read_bytes() == before


def test_keras_auto_names_are_the_names_keras_gives(tmp_path):
    """Build the exported model's layers in a fresh Keras session without names: Keras's own
    numbering is what keras_auto_names says."""
    src = tmp_path / "n.nnspec"
    src.write_text("model n\ninput x: float32[6, 4]\ndense 4\nmine: dense 4\nlstm 4 bidirectional=true return_sequences=true\n"
                   "lstm 4 return_sequences=true\nresidual { attention heads=2 key_dim=2 }\ndropout 0.5\n"
                   "concat { branch { dense 3 } branch { } }\nrelu\nflatten\ndense 2\n")
    model = check_file(str(src)).model
    auto = keras_auto_names(model)
    L = keras.layers
    keras.backend.clear_session()
    x = inp = keras.Input((6, 4))
    made = {}
    x = made.setdefault("dense_1", L.Dense(4))(x)
    x = made.setdefault("mine", L.Dense(4))(x)
    x = made.setdefault("lstm_1", L.Bidirectional(L.LSTM(4, return_sequences=True)))(x)
    x = made.setdefault("lstm_2", L.LSTM(4, return_sequences=True))(x)
    mha = made.setdefault("attention_1", L.MultiHeadAttention(2, 2))
    x = L.Add()([x, mha(x, x)])
    x = made.setdefault("dropout_1", L.Dropout(0.5))(x)
    x = L.Concatenate()([made.setdefault("dense_3", L.Dense(3))(x), x])
    x = made.setdefault("relu_1", L.Activation("relu"))(x)
    x = made.setdefault("flatten_1", L.Flatten())(x)
    made.setdefault("dense_4", L.Dense(2))(x)
    del inp
    assert auto == {k: v.name for k, v in made.items()}


def test_keras_names_option(tmp_path):
    """--keras-names: export reads a checkpoint keyed by Keras's names and names the Keras layers so;
    import writes the checkpoint keyed by them."""
    src = tmp_path / "k.nnspec"
    src.write_text("model k\ninput x: float32[5]\ndense 4 activation=relu\nblock: dense 4\ndense 2\n")
    model = check_file(str(src)).model
    w = weights_for(model)
    auto = keras_auto_names(model)
    assert auto == {"dense_1": "dense", "block": "dense_1", "dense_3": "dense_2"}
    np.savez(tmp_path / "kw.npz", **{f"{auto[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in w.items()})
    assert nnc(["export", "keras", str(src), "--weights", str(tmp_path / "kw.npz"), "--keras-names",
                "-o", str(tmp_path / "k.keras")]) == 0
    km = keras.saving.load_model(str(tmp_path / "k.keras"))
    assert [l.name for l in km.layers] == ["dense", "dense_1", "dense_2"]
    x = input_for(model)
    close(keras_run(km, x), Network(model, w).predict(x))
    r, w2 = run_import(tmp_path / "k.keras", tmp_path, "--keras-names")
    assert sorted(w2) == sorted(f"{auto[k.split('.')[0]]}.{k.split('.', 1)[1]}" for k in w) or sorted(w2) == sorted(
        f"{keras_auto_names(r.model)[k.split('.')[0]]}.{k.split('.', 1)[1]}" for k in r.model.weight_shapes())
    assert all(np.array_equal(w2[f"{auto[k.split('.')[0]]}.{k.split('.', 1)[1]}"], v) for k, v in w.items())
    # nnc compile --keras-names reads the same checkpoint
    assert nnc(["compile", str(src), "--weights", str(tmp_path / "kw.npz"), "--keras-names",
                "-o", str(tmp_path / "k.onnx")]) == 0
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "k.onnx"), providers=["CPUExecutionProvider"])
    close(sess.run(None, {sess.get_inputs()[0].name: x})[0], keras_run(km, x))
    # without the flag the same checkpoint does not fit, by name
    assert nnc(["compile", str(src), "--weights", str(tmp_path / "kw.npz"), "-o", str(tmp_path / "k2.onnx")]) == 1


def test_import_of_an_onnx_file_without_a_graph_is_refused_clearly(tmp_path, capsys):
    # .onnx files go to nnc.tools.onnx_import (tests/onnx/test_onnx_import.py, tests/interop/test_interop_torch_onnx.py)
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")  # a ModelProto with an ir_version and nothing else
    assert nnc(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnspec")]) == 1
    assert "is not an ONNX model: it has no graph" in capsys.readouterr().err
    assert not (tmp_path / "m.nnspec").exists()


def test_export_refuses_gelu_tanh(tmp_path, capsys):
    src = tmp_path / "g.nnspec"
    src.write_text("model g\ninput x: float32[3]\ndense 2 activation=gelu_tanh\n")
    assert nnc(["export", "keras", str(src), "-o", str(tmp_path / "g.keras")]) == 1
    assert "gelu_tanh" in capsys.readouterr().err


def test_checked_source_of_an_import_formats_stably(tmp_path):
    from nnc.lang.fmt import format_source

    km = _keras_models()[2]
    km.save(str(tmp_path / "t.keras"))
    r, _ = run_import(tmp_path / "t.keras", tmp_path)
    assert format_source(r.source)[0] == r.source
    assert check_source(r.source).ok


def test_keras_names_that_are_not_nnc_names_are_made_valid(tmp_path):
    km = keras.Sequential([keras.Input((4,), name="in-put"), keras.layers.Dense(3, name="my-dense"),
                           keras.layers.Dense(3, name="model"), keras.layers.Dense(2, name="dense_2")], name="odd names")
    km.save(str(tmp_path / "n.keras"))
    r, w = run_import(tmp_path / "n.keras", tmp_path)
    assert [l.name for l in r.model.layers] == ["my_dense", "model_", "dense_2"]
    assert sorted(w) == sorted(f"{n}.{v}" for n in ("my_dense", "model_", "dense_2") for v in ("kernel", "bias"))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    close(Network(r.model, w).predict(x), keras_run(km, x))


def test_export_with_keras_names_names_merges_too(tmp_path):
    src = tmp_path / "b.nnspec"
    src.write_text(spec_text("nested"))
    assert nnc(["export", "keras", str(src), "--keras-names", "-o", str(tmp_path / "b.keras")]) == 0
    km = keras.saving.load_model(str(tmp_path / "b.keras"))
    names = {l.name for l in km.layers}
    assert {"add", "concatenate", "maximum", "add_1", "conv2d", "conv2d_4", "dense"} <= names
    assert "conv2d_5" not in names


def test_model_compile_becomes_the_train_block(tmp_path):
    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name="compiled")
    km.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
               loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    km.save(str(tmp_path / "c.keras"))
    km.save(str(tmp_path / "c.h5"))
    for f in ("c.keras", "c.h5"):
        r, _ = run_import(tmp_path / f, tmp_path)
        t = r.model.train
        assert t is not None and t.loss == "sparse_categorical_crossentropy" and t.metrics == ("accuracy",), f
        assert (t.optimizer.name, t.optimizer.lr, t.optimizer.momentum, t.optimizer.nesterov) == ("sgd", 0.05, 0.9, True)
    km.compile(optimizer=keras.optimizers.AdamW(2e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    km.save(str(tmp_path / "logits.keras"))
    r, _ = run_import(tmp_path / "logits.keras", tmp_path)
    assert "not imported from model.compile: loss categorical_crossentropy from_logits=True" in r.source


def test_model_compile_amsgrad_becomes_the_optimizer_option(tmp_path):
    """Keras's Adam/AdamW(amsgrad=True) import as `amsgrad=true` (not as a note), in .keras and .h5;
    amsgrad=False is Keras's default and is left out."""
    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name="ams")
    for opt, name, wd in ((keras.optimizers.Adam(0.01, amsgrad=True), "adam", 0.0),
                          (keras.optimizers.AdamW(0.01, amsgrad=True), "adamw", 0.004)):
        km.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        assert km.optimizer.get_config()["amsgrad"] is True
        for f in (f"{name}.keras", f"{name}.h5"):
            km.save(str(tmp_path / f))
            r, _ = run_import(tmp_path / f, tmp_path)
            o = r.model.train.optimizer
            assert (o.name, o.lr, o.amsgrad, o.weight_decay) == (name, 0.01, True, wd), f
            assert "amsgrad=true" in r.source and "not imported" not in r.source, f
    km.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    km.save(str(tmp_path / "plain.keras"))
    r, _ = run_import(tmp_path / "plain.keras", tmp_path)
    assert r.model.train.optimizer.amsgrad is False and "amsgrad" not in r.source


def test_a_graph_that_is_not_a_nest_of_blocks_is_refused(tmp_path, capsys):
    L = keras.layers
    x = keras.Input((4,))
    a, b = L.Dense(4, name="a")(x), L.Dense(4, name="b")(x)
    out = L.Add(name="outer")([a, L.Add(name="inner")([a, b])])  # a feeds two merges at different levels
    keras.Model(x, out).save(str(tmp_path / "g.keras"))
    assert nnc(["import", str(tmp_path / "g.keras"), "-o", str(tmp_path / "g.nnspec")]) == 1
    assert "not a nest of blocks" in capsys.readouterr().err
    assert not (tmp_path / "g.nnspec").exists()
