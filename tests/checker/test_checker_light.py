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
        heavy += [m for m in ("nnc.lang.keras_names",) if m in sys.modules]  # the tables that explain mistakes
        print(json.dumps({{"code": code, "heavy": heavy}}))
    """)
    assert out == {"code": 0, "heavy": []}


def test_grammar_tables_ship_current_and_are_what_lark_builds(tmp_path, monkeypatch):
    """The LALR tables ship as JSON data made from grammar/nnspec.lark (no pickle, no user cache):
    they must be current, and parse exactly as tables lark builds from the grammar."""
    import hashlib
    import json

    import nnc.lang.parser as p
    from lark import Lark

    text = p._grammar_text()
    with open(p._grammar_path(p.TABLES_FILE), encoding="utf-8") as f:
        tables = json.load(f)
    assert tables["grammar_sha256"] == hashlib.sha256(text.encode()).hexdigest(), \
        "grammar/nnspec.tables.json is stale: run python -c 'from nnc.lang.parser import write_tables; write_tables()'"
    # nothing under the user's cache dir is read: a planted file there changes nothing
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "nnc").mkdir()
    for name in ("nnspec.lark-cache", "nnspec-0000.lark-cache"):
        (tmp_path / "nnc" / name).write_bytes(b"\x80\x04not a real pickle")
    p._lark.cache_clear()
    try:
        shipped = p._lark()
        built = Lark(text, transformer=p._ToAST(), **p.GRAMMAR_OPTIONS)
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        for spec in sorted((root / "specs").glob("*.nnspec")) + sorted((root / "tests/checker/golden").glob("block_*.nnspec")):
            src = spec.read_text()
            try:
                a = shipped.parse(src)
            except Exception as e:  # noqa: BLE001 - both must fail alike
                a = type(e).__name__
            try:
                b = built.parse(src)
            except Exception as e:  # noqa: BLE001
                b = type(e).__name__
            assert repr(a) == repr(b), spec.name
    finally:
        p._lark.cache_clear()
