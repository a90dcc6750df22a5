"""Training models with blocks. specs/digits_resnet.nnspec (residual blocks) is trained to its
accuracy, evaluated and compiled with its trained weights by tests/train/test_train_specs.py,
as the other digits specs are; here: its expect lines, and checkpoints of block models, whose
arrays keep the layers' own names, so an interrupted run resumes (`nnc train --resume`) to the
weights of a run never interrupted."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from nnc.cli import main
from nnc.lang.checker import check_file
from nnc.lang.model import Block
from nnc.lang.weights import load_checkpoint
from nnc.training.data import Dataset, load_data
from nnc.training.loop import Trainer, read_state

SPEC = Path(__file__).resolve().parent.parent.parent / "specs" / "digits_resnet.nnspec"


def resnet():
    r = check_file(str(SPEC))
    assert r.ok, [d.message for d in r.diagnostics]
    return r.model


def test_spec_has_residual_blocks_and_its_expect_numbers():
    model = resnet()
    assert [n.kind for n in model.body if isinstance(n, Block)] == ["residual", "residual"]
    # the numbers are Keras's (tests/onnx/test_onnx_keras_blocks.py builds the twin and counts)
    text = SPEC.read_text()
    assert model.total_params == int(re.search(r"expect params == (\d+)", text).group(1))
    assert list(model.output_shape) == json.loads(re.search(r"expect output == (\[.*\])", text).group(1))


class Stop(Exception):
    pass


def test_interrupted_block_model_resumes_to_the_uninterrupted_weights(tmp_path):
    model = resnet()
    digits = load_data("digits", model, model.train.loss)
    data = Dataset("digits[:160]", digits.x_train[:160], digits.y_train[:160])
    cfg = dataclasses.replace(model.train, epochs=3)
    source = SPEC.read_text()
    full = Trainer(model, cfg, data, str(tmp_path / "full"), spec_source=source)
    full.fit()

    def interrupt(epoch, step):
        if epoch == 2 and step == 1:
            raise Stop()

    out = str(tmp_path / "cut")
    with pytest.raises(Stop):
        Trainer(model, cfg, data, out, spec_source=source, on_step=interrupt).fit()
    arrays, meta = read_state(out)
    assert meta["epoch"] == 2
    resumed = Trainer(model, cfg, data, out, spec_source=source)
    resumed.restore(arrays, meta)
    resumed.fit()
    assert set(full.net.weights) == set(model.weight_shapes())
    for k in full.net.weights:
        assert np.array_equal(full.net.weights[k], resumed.net.weights[k]), k


def test_nnc_train_resume_continues_a_block_model_exactly(tmp_path):
    # one epoch, then `--resume` to two: the weights of a two-epoch run, under the layers' names
    args = [str(SPEC), "--data", "digits", "--quiet"]
    assert main(["train", *args, "--out", str(tmp_path / "two"), "--epochs", "2"]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "cut"), "--epochs", "1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "cut"), "--epochs", "2", "--quiet"]) == 0
    model = resnet()
    a = load_checkpoint(str(tmp_path / "two" / "weights.npz"), model)
    b = load_checkpoint(str(tmp_path / "cut" / "weights.npz"), model)
    assert set(a) == set(b) == set(model.weight_shapes())
    assert any(k.startswith("conv2d_") for k in a)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


# --- the specs with blocks users copy: one training step each, through the NumPy engine --------

BLOCK_SPECS = ["cifar10_resnet", "inception_blocks", "unet_segmentation", "transformer_text"]


def _tiny_data(model, n, seed):
    """n random samples the spec accepts, with random class ids shaped like its output less the
    class axis (one per pixel for the U-Net)."""
    rng = np.random.default_rng(seed)
    shape = (n, *model.input.shape)
    if model.input.dtype == "int64":
        x = rng.integers(0, model.input.vocab, size=shape, dtype=np.int64)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], size=(n, *model.output_shape[:-1]))
    return x, y


@pytest.mark.parametrize("name", BLOCK_SPECS)
def test_block_spec_takes_a_training_step(name, tmp_path):
    from nnc.engines.numpy import Network
    from nnc.lang.weights import init_weights
    from nnc.training.losses import loss_and_grad

    path = SPEC.parent / f"{name}.nnspec"
    r = check_file(str(path))
    assert r.diagnostics == [], [d.message for d in r.diagnostics]
    model = r.model
    assert model.train is not None and model.train.loss == "sparse_categorical_crossentropy"
    x, y = _tiny_data(model, 4, seed=3)
    # the gradient of the spec's loss in training mode (dropout on, batchnorm on the batch)
    net = Network(model, init_weights(model, model.train.seed))
    z = net.forward(x, training=True, rng=np.random.default_rng(0))
    value, dz = loss_and_grad(model.train.loss, z, y, net.final_activation)
    assert np.isfinite(value) and value > 0
    grads = net.backward(dz)
    trainable = {k for k in model.weight_shapes() if not k.endswith((".moving_mean", ".moving_variance"))}
    assert set(grads) == trainable
    for k, g in grads.items():
        assert g.shape == model.weight_shapes()[k] and np.all(np.isfinite(g)), k
    # one optimizer step of `nnc train`'s loop, with the spec's own optimizer
    cfg = dataclasses.replace(model.train, epochs=1, batch_size=4, validation_split=0.0)
    trainer = Trainer(model, cfg, Dataset(f"random[{name}]", x, y), str(tmp_path / name), spec_source=path.read_text())
    before = {k: v.copy() for k, v in trainer.net.weights.items()}
    history = trainer.fit()
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    for k, w in trainer.net.weights.items():
        assert np.all(np.isfinite(w)), k
        assert not np.array_equal(w, before[k]), f"{k} did not move"  # every weight, moving statistics too
    assert set(load_checkpoint(str(tmp_path / name / "weights.npz"), model)) == set(model.weight_shapes())
