"""`nnc eval --engine torch`: the loss and metrics PyTorch computes are the NumPy engine's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from nnc.cli import main  # noqa: E402
from nnc.lang.checker import check_file  # noqa: E402
from nnc.lang.weights import init_weights, save_checkpoint  # noqa: E402

SPEC = str(Path(__file__).resolve().parents[2] / "specs" / "digits_convnet.nnspec")


def test_eval_with_torch_gives_the_numpy_numbers(tmp_path, capsys):
    model = check_file(SPEC).model
    w = {k: v + np.random.default_rng(0).normal(scale=0.05, size=v.shape).astype(np.float32)
         for k, v in init_weights(model, 1).items()}
    save_checkpoint(str(tmp_path / "w.npz"), w)
    results = {}
    for engine in ("numpy", "torch"):
        assert main(["eval", SPEC, "--weights", str(tmp_path / "w.npz"), "--data", "digits", "--format", "json",
                     "--engine", engine]) == 0
        results[engine] = json.loads(capsys.readouterr().out)
    numpy_, torch_ = results["numpy"], results["torch"]
    assert set(numpy_) == set(torch_) and numpy_["samples"] == torch_["samples"] > 0
    for key in ("loss", "accuracy"):
        assert torch_[key] == pytest.approx(numpy_[key], rel=1e-5, abs=1e-7), key


def test_device_without_the_torch_engine_is_a_usage_error(tmp_path, capsys):
    model = check_file(SPEC).model
    save_checkpoint(str(tmp_path / "w.npz"), init_weights(model, 0))
    assert main(["eval", SPEC, "--weights", str(tmp_path / "w.npz"), "--data", "digits", "--device", "cuda"]) == 2
    assert "--engine torch" in capsys.readouterr().err
