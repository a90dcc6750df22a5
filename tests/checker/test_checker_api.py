"""The Python API beside the CLI: check never raises, load raises SpecError with every diagnostic."""

from __future__ import annotations

from pathlib import Path

import pytest

import nnc

CONTRACT = Path(__file__).resolve().parents[2] / "tests" / "data" / "contract"


def test_check_and_load_a_contract_spec():
    result = nnc.check(str(CONTRACT / "mnist_convnet.nnspec"))
    assert result.ok and result.diagnostics == []
    model = nnc.load(str(CONTRACT / "mnist_convnet.nnspec"))
    assert model.total_params == 93322  # the contract's figure
    assert model.output_shape == (10,)
    assert [l.name for l in model.layers][:2] == ["conv2d_1", "maxpool2d_1"]
    assert model.weight_shapes()["conv2d_1.kernel"] == (3, 3, 1, 32)


def test_bad_spec_is_data_for_check_and_an_exception_for_load():
    text = "model m\ninput x: float32[4, 4, 1]\nconv2d 8 kernel=7\ndense 3 activation=rleu\n"
    result = nnc.check_source(text, "bad.nnspec")
    assert not result.ok and result.model is None
    assert [(d.code, d.span.line) for d in result.errors] == [("does-not-fit", 3), ("bad-value", 4)]
    with pytest.raises(nnc.SpecError) as exc:
        nnc.loads(text, "bad.nnspec")
    assert isinstance(exc.value, nnc.UserError)


def test_unreadable_file_is_an_io_diagnostic(tmp_path):
    result = nnc.check(str(tmp_path / "missing.nnspec"))
    assert [d.code for d in result.diagnostics] == ["io"]


def test_a_utf8_byte_order_mark_is_not_part_of_the_spec(tmp_path):
    # Windows editors often save UTF-8 with a BOM; it must not become a syntax error at 1:1
    p = tmp_path / "bom.nnspec"
    p.write_bytes("\ufeffmodel m\ninput x: float32[4]\ndense 2 activation=softmax\n".encode("utf-8"))
    result = nnc.check(str(p))
    assert result.ok and result.diagnostics == [], [d.message for d in result.diagnostics]
    assert result.model.name == "m"


def test_attention_on_an_image_names_the_reshape_to_write():
    from nnc.lang.checker import check_source as _check

    r = _check("model m\ninput x: float32[8, 6, 3]\nattention heads=2 key_dim=4\n")
    (d,) = r.errors
    assert d.code == "bad-input-rank" and "reshape [-1, 3]" in d.help and "48 steps" in d.help
    # and that reshape does what the help says
    fixed = _check("model m\ninput x: float32[8, 6, 3]\nreshape [-1, 3]\nattention heads=2 key_dim=4\n")
    assert fixed.ok and fixed.model.output_shape == (48, 3)
