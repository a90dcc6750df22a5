"""onnxruntime throughput (CPU provider) of nnc's graph against the graph `torch.onnx.export`
writes for the same model with the same weights (bench/torch_twin.py, the TorchScript exporter:
it keeps LSTM/GRU/RNN as single operators, as nnc does), at batch 1 and 256, for each contract spec.

Both sessions get the same options (all graph optimizations, onnxruntime's default threads) and
the same input; the outputs are checked to agree before timing. Each figure is the best of
`--rounds` alternating rounds, each the median of timed runs after warm-up runs.

    .venv/bin/python bench/bench_ort.py [--seconds S]

Goal: nnc's graph at least as fast."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import write_section  # noqa: E402

CONTRACT = sorted((ROOT / "tests" / "data" / "contract").glob("*.nnspec"))
BATCHES = (1, 256)


def _session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _median_seconds(sess, x: np.ndarray, seconds: float) -> float:
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time spent on each side of a measurement (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per measurement (default 5)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from nnc.lang.checker import check_file
    from nnc.lang.weights import init_weights
    from nnc.onnx import export as ox
    from torch_twin import example_input, export

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in CONTRACT:
            model = check_file(str(spec)).model
            w = init_weights(model, 0)
            ours, theirs = f"{tmp}/{model.name}.nnc.onnx", f"{tmp}/{model.name}.torch.onnx"
            ox.compile_model(model, w, ours, opset=ox.DEFAULT_OPSET)
            export(model, w, theirs, ox.DEFAULT_OPSET, dynamo=False)
            s_ours, s_theirs = _session(ours), _session(theirs)
            for batch in BATCHES:
                x = example_input(model, batch, seed=batch)
                a = s_ours.run(None, {s_ours.get_inputs()[0].name: x})[0]
                b = s_theirs.run(None, {s_theirs.get_inputs()[0].name: x})[0]
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
                # alternate the two in rounds so a change in machine load falls on both; keep each
                # side's best round (the one least disturbed by anything else on the machine)
                t_ours, t_theirs = [], []
                for _ in range(args.rounds):
                    t_ours.append(_median_seconds(s_ours, x, args.seconds / args.rounds))
                    t_theirs.append(_median_seconds(s_theirs, x, args.seconds / args.rounds))
                t_o, t_t = min(t_ours), min(t_theirs)
                rows.append((model.name, batch, t_o, t_t))
                print(f"{model.name} batch {batch}: nnc {batch / t_o:,.0f}/s, torch {batch / t_t:,.0f}/s, "
                      f"ratio {t_t / t_o:.2f}", flush=True)

    lines = [
        "Samples per second on onnxruntime's CPU provider, nnc's graph against the TorchScript exporter's "
        "graph of the same model and weights, opset 17. Ratio: nnc's throughput over PyTorch's graph's "
        "(above 1: nnc's graph is faster). Goal: at least 1.",
        "",
        "| spec | batch | nnc graph | torch.onnx.export graph | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, batch, t_o, t_t in rows:
        lines.append(f"| {name} | {batch} | {batch / t_o:,.0f}/s | {batch / t_t:,.0f}/s | {t_t / t_o:.2f} |")
    ratios = [t_t / t_o for *_, t_o, t_t in rows]
    lines += ["", f"Geometric mean of the ratio: {statistics.geometric_mean(ratios):.2f}; lowest {min(ratios):.2f}, "
              f"highest {max(ratios):.2f}.",
              "", "The heavy kernels are the same in both graphs (Conv, MaxPool, Gemm, the LSTM/GRU/RNN operators). "
              "nnc's graphs are smaller around them: no initial state built from Shape/ConstantOfShape, the last "
              "state read from the operator's Y_h instead of gathered from the whole sequence, one time-major "
              "Transpose instead of two. So the ratio stays near 1, and its spread is largely the machine's: a "
              "few percent either way on a shared 2-core machine."]
    write_section("bench_ort", "Inference: onnxruntime on nnc's graph against PyTorch's", "\n".join(lines))
    print("wrote BENCHMARKS.md section bench_ort")


if __name__ == "__main__":
    main()
