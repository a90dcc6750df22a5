"""Checking is arithmetic on shapes: it never allocates weights and never imports numpy or
onnx, so a spec of 2.5 billion parameters summarizes at once and `nnc check` starts fast.
Each test runs in a fresh interpreter, where sys.modules shows what checking imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "tests" / "data" / "contract"

# 5,000,000 x 512 embedding weights = 2,560,000,000; dense 2 on 512 features = 512*2 + 2 = 1,026.
HUGE = """\
model huge_embedding
input tokens: int64[100] vocab=5000000
embedding 512
globalavgpool
dense 2 activation=softmax
expect params == 2560001026
"""


def run_fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_huge_embedding_summarizes_in_python_integers_without_numpy(tmp_path):
    spec = tmp_path / "huge.nnspec"
    spec.write_text(HUGE)
    out = run_fresh(f"""
        import io, json, sys, contextlib
        from nnc.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["summary", {str(spec)!r}, "--format", "json"])
        summary = json.loads(buf.getvalue())
        print(json.dumps({{"code": code, "summary": summary, "numpy": "numpy" in sys.modules,
                           "onnx": "onnx" in sys.modules}}))
    """)
    assert out["code"] == 0
    assert out["summary"]["total_params"] == 2_560_001_026
    assert [layer["params"] for layer in out["summary"]["layers"]] == [2_560_000_000, 0, 1_026]
    assert out["summary"]["layers"][0]["output_shape"] == [100, 512]
    assert not out["numpy"] and not out["onnx"]


def test_python_api_counts_the_huge_model_as_an_int():
    out = run_fresh(f"""
        import json, sys
        import nnc
        model = nnc.loads({HUGE!r})
        print(json.dumps({{"total": model.total_params, "type": type(model.total_params).__name__,
                           "numpy": "numpy" in sys.modules}}))
    """)
    assert out == {"total": 2_560_001_026, "type": "int", "numpy": False}


def test_nnc_check_of_contract_specs_imports_neither_numpy_nor_onnx():
    files = sorted(str(p) for p in CONTRACT.glob("*.nnspec"))
    assert len(files) == 5
    out = run_fresh(f"""
        import io, json, sys, contextlib
        from nnc.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["check", *{files!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "onnx", "onnxruntime", "torch", "keras"))
        print(json.dumps({{"code": code, "heavy": heavy}}))
    """)
    assert out == {"code": 0, "heavy": []}
