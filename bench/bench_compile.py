"""`nnc compile` as a whole process against a whole process of `torch.onnx.export` of the
same model with the same weights (bench/torch_twin.py), for each contract spec.

Both sides start from files on disk: nnc from the spec and an .npz checkpoint, PyTorch from
the pickled checked model (which needs only nnc.lang.model) and the same .npz. Both write a model
with a symbolic batch at the same opset. The PyTorch side is measured with both exporters:
the TorchScript one (`dynamo=False`) and the default torch.export one (needs onnxscript).

    .venv/bin/python bench/bench_compile.py [--repeat N]

nnc runs as users run it, the `nnc` script beside the interpreter. Both sides run with
Python's bytecode cache on (PYTHONDONTWRITEBYTECODE, if set here, is dropped for them) and
one untimed run first: an installed package has its .pyc files; without them nnc would
recompile its own modules on every run (~20 ms) while torch's come precompiled.

Goal: nnc at least 10x faster."""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402

CONTRACT = sorted((ROOT / "tests" / "data" / "contract").glob("*.nnspec"))
OPSET = 17


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str], repeat: int, warm: bool = True) -> float | None:
    times = []
    if warm:  # untimed: bytecode cache and page cache warm
        subprocess.run(cmd, capture_output=True, env=ENV)
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            print(f"  failed: {' '.join(cmd)}\n  {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
            return None
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each process; the median is kept (default 3)")
    ap.add_argument("--no-dynamo", action="store_true", help="skip the torch.export-based exporter (slow)")
    args = ap.parse_args()

    from nnc.lang.checker import check_file
    from nnc.lang.weights import init_weights, save_checkpoint

    py = sys.executable
    script = Path(py).with_name("nnc")
    nnc = [str(script)] if script.exists() else [py, "-m", "nnc.cli"]
    try:
        import onnxscript  # noqa: F401
        have_dynamo = not args.no_dynamo
    except ImportError:
        have_dynamo = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in CONTRACT:
            model = check_file(str(spec)).model
            w = os.path.join(tmp, f"{model.name}.npz")
            save_checkpoint(w, init_weights(model, 0))
            pkl = os.path.join(tmp, f"{model.name}.pkl")
            with open(pkl, "wb") as f:
                pickle.dump(model, f)
            out = os.path.join(tmp, "out.onnx")
            t_nnc = _time(nnc + ["compile", str(spec), "-o", out, "--weights", w, "--opset", str(OPSET)],
                          3 * args.repeat)  # a tenth of the others' time: more runs steady its median
            twin = [py, str(HERE / "torch_twin.py"), pkl, w, out, str(OPSET)]
            t_legacy = _time(twin + ["legacy"], args.repeat)
            t_dynamo = _time(twin + ["dynamo"], 1, warm=False) if have_dynamo else None  # a minute or two each: once
            rows.append((model.name, t_nnc, t_legacy, t_dynamo))
            print(f"{model.name}: nnc {t_nnc:.2f} s, torch legacy {t_legacy}, torch dynamo {t_dynamo}", flush=True)

    def cell(t, ref):
        if t is None:
            return "n/a"
        return f"{t:.2f} s ({t / ref:.1f}x)"

    lines = [
        "Whole processes from files on disk to a written .onnx, opset 17, symbolic batch; median of "
        f"{args.repeat} runs ({3 * args.repeat} for nnc, one for the torch.export exporter, which takes minutes on the recurrent specs). In brackets: how many times longer than `nnc compile`. Goal: at least 10x.",
        "",
        "| spec | `nnc compile` | `torch.onnx.export(dynamo=False)` | `torch.onnx.export` (torch.export) |",
        "|---|---|---|---|",
    ]
    for name, t_nnc, t_legacy, t_dynamo in rows:
        lines.append(f"| {name} | {t_nnc:.3f} s | {cell(t_legacy, t_nnc)} | {cell(t_dynamo, t_nnc)} |")
    legacy = [l / n for _, n, l, _ in rows if l]
    dyn = [d / n for _, n, _, d in rows if d]
    lines += ["", f"Geometric mean of the ratio: TorchScript exporter {statistics.geometric_mean(legacy):.1f}x"
              + (f", torch.export exporter {statistics.geometric_mean(dyn):.1f}x." if dyn else ".")]
    lines += ["", "nnc runs as the `nnc` script, both sides with Python's bytecode cache and one untimed run first. "
              "Most of `nnc compile`'s time is the Python interpreter and its imports (numpy, lark; it writes the "
              "protobuf itself and never imports onnx); most of PyTorch's is `import torch`, and for the "
              "torch.export exporter, tracing and optimizing."]
    write_section("bench_compile", "Compile time: `nnc compile` against `torch.onnx.export`", "\n".join(lines))
    print("wrote BENCHMARKS.md section bench_compile")


if __name__ == "__main__":
    main()
