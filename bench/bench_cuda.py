"""Inference on an NVIDIA GPU: nnc's graph on onnxruntime's CUDA provider against PyTorch on
the same GPU, for each contract spec at batch 1 and 256.

Three sides, same model, same weights, same input, outputs checked to agree before timing:
- nnc's graph (`nnc compile`, opset 17) on the CUDA provider, through nnc.onnx.runtime.Runner (as
  `nnc run --device cuda` runs it; the session is checked to really be on CUDA);
- the graph `torch.onnx.export` (TorchScript exporter) writes, on the CUDA provider;
- PyTorch eager on CUDA (bench/torch_twin.py's module, torch.no_grad, cuDNN).
Every side is timed from a host NumPy array to a host NumPy array (onnxruntime's `run` copies
the input to the GPU and the output back; the eager side does the same copies), the median of
runs after warm-up, best of `--rounds` alternating rounds.

    python bench/bench_cuda.py [--seconds S]     # on a machine with a GPU (see ../shared/gpu)

Goal: nnc's graph at least as fast as PyTorch's graph on the same provider."""

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


def _median(fn, seconds: float) -> float:
    for _ in range(5):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 10 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time on each side of a measurement (default 1)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per measurement (default 3)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import onnxruntime as ort
    import torch

    from nnc.lang.checker import check_file
    from nnc.lang.weights import init_weights
    from nnc.onnx import export as ox
    from nnc.onnx.runtime import Runner
    from torch_twin import example_input, export, torch_model

    if not torch.cuda.is_available():
        sys.exit("bench_cuda: no CUDA GPU here")
    gpu = torch.cuda.get_device_name(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in CONTRACT:
            model = check_file(str(spec)).model
            w = init_weights(model, 0)
            ours, theirs = f"{tmp}/{model.name}.nnc.onnx", f"{tmp}/{model.name}.torch.onnx"
            ox.compile_model(model, w, ours, opset=ox.DEFAULT_OPSET)
            export(model, w, theirs, ox.DEFAULT_OPSET, dynamo=False)
            r = Runner(ours, "cuda")
            assert r.session.get_providers()[0] == "CUDAExecutionProvider", r.session.get_providers()
            so = ort.SessionOptions()
            so.log_severity_level = 3
            s_theirs = ort.InferenceSession(theirs, so, providers=["CUDAExecutionProvider"])
            assert s_theirs.get_providers()[0] == "CUDAExecutionProvider"
            net = torch_model(model, w).cuda().eval()
            for batch in BATCHES:
                x = example_input(model, batch, seed=batch)
                feed_t = {s_theirs.get_inputs()[0].name: x}

                def eager():
                    with torch.no_grad():
                        return net(torch.from_numpy(x).cuda()).cpu().numpy()

                a, b, c = r.run(x), s_theirs.run(None, feed_t)[0], eager()
                scale = 1e-4 * float(np.abs(c).max())
                np.testing.assert_allclose(a, c, rtol=1e-3, atol=scale)
                np.testing.assert_allclose(b, c, rtol=1e-3, atol=scale)
                t = {"nnc": [], "torch_graph": [], "eager": []}
                for _ in range(args.rounds):
                    t["nnc"].append(_median(lambda: r.run(x), args.seconds / args.rounds))
                    t["torch_graph"].append(_median(lambda: s_theirs.run(None, feed_t), args.seconds / args.rounds))
                    t["eager"].append(_median(eager, args.seconds / args.rounds))
                best = {k: min(v) for k, v in t.items()}
                rows.append((model.name, batch, best["nnc"], best["torch_graph"], best["eager"]))
                print(f"{model.name} batch {batch}: nnc {best['nnc'] * 1e3:.3f} ms, torch graph "
                      f"{best['torch_graph'] * 1e3:.3f} ms, eager {best['eager'] * 1e3:.3f} ms", flush=True)

    lines = [
        f"GPU: {gpu}, onnxruntime {ort.__version__} (CUDA provider), torch {torch.__version__}, TF32 off. "
        "Milliseconds per batch, host array in to host array out (copies included on every side); in "
        "brackets, the other side's time over nnc's (above 1: nnc's graph is faster). Goal: nnc's graph at "
        "least as fast as PyTorch's graph on the same provider.",
        "",
        "| spec | batch | nnc graph, CUDA provider | torch.onnx.export graph, CUDA provider | PyTorch eager, CUDA |",
        "|---|---|---|---|---|",
    ]
    for name, batch, t_n, t_g, t_e in rows:
        lines.append(f"| {name} | {batch} | {t_n * 1e3:.3f} ms | {t_g * 1e3:.3f} ms ({t_g / t_n:.2f}) | "
                     f"{t_e * 1e3:.3f} ms ({t_e / t_n:.2f}) |")
    rg = [t_g / t_n for _, _, t_n, t_g, _ in rows]
    re_ = [t_e / t_n for _, _, t_n, _, t_e in rows]
    lines += ["", f"Geometric mean of the ratio: against PyTorch's graph {statistics.geometric_mean(rg):.2f}, "
              f"against PyTorch eager {statistics.geometric_mean(re_):.2f}."]
    write_section("bench_cuda", "Inference on a GPU: onnxruntime's CUDA provider against PyTorch", "\n".join(lines))
    print("wrote BENCHMARKS.md section bench_cuda")


if __name__ == "__main__":
    main()
