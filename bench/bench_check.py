"""How fast `nnc check` is, as whole processes (what a user, an editor or CI waits for):

1. `nnc check` of a contract spec next to a Python process that imports Keras 3, builds the
   same model and prints its summary (what one would run without nnc to learn the same numbers).
   Goal: nnc under 0.3 s.
2. `nnc check` of specs of 100, 1,000 and 10,000 layers (dense 8 and relu, alternating): the
   time per layer and whether it grows linearly. Goal: 10,000 layers under 1 s.

Every figure is the median of several runs; ratios compare runs of the same session.

    .venv/bin/python bench/bench_check.py [--reps N] [--keras-reps N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, write_section  # noqa: E402

NNC = [sys.executable, "-m", "nnc.cli"]
CONTRACT = ROOT / "tests" / "data" / "contract" / "mnist_convnet.nnspec"
SIZES = (100, 1_000, 10_000)

KERAS_SCRIPT = textwrap.dedent("""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers as L
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.Flatten(),
        L.Dense(64, activation="relu"), L.Dense(10, activation="softmax"),
    ])
    model.summary()
    assert model.count_params() == 93322
""")

# Inside one process: seconds spent in check_file alone (parse + check), without start-up.
IN_PROCESS = textwrap.dedent("""
    import sys, time
    from nnc.lang.checker import check_file
    from nnc.lang.parser import _lark
    _lark()
    t = time.perf_counter()
    r = check_file(sys.argv[1])
    dt = time.perf_counter() - t
    assert r.ok, [d.message for d in r.diagnostics]
    print(dt)
""")


# as bench_compile: Python's bytecode cache on (an installed package has its .pyc files;
# without them every run recompiles nnc's modules, tens of ms that no user pays)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], reps: int, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **(env or {})}, cwd=ROOT)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return times


def layers_spec(n: int) -> str:
    body = "".join("dense 8\n" if i % 2 == 0 else "relu\n" for i in range(n))
    return f"model deep_{n}\ninput x: float32[8]\n{body}expect output == [8]\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=11, help="runs of each nnc measurement (median)")
    ap.add_argument("--keras-reps", type=int, default=3, help="runs of the Keras process (median)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()

    wall(NNC + ["check", str(CONTRACT)], 2)  # warm the file system
    nnc_contract = wall(NNC + ["check", str(CONTRACT)], args.reps)
    keras = wall([sys.executable, "-c", KERAS_SCRIPT], args.keras_reps)
    python = wall([sys.executable, "-c", "pass"], args.reps)
    med = statistics.median
    print(f"nnc check {CONTRACT.name}: {med(nnc_contract):.3f} s; keras build+summary: {med(keras):.2f} s; "
          f"bare python: {med(python):.3f} s")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"deep_{n}.nnspec"
            path.write_text(layers_spec(n))
            whole = med(wall(NNC + ["check", str(path)], args.reps))
            inner = med(float(subprocess.run([sys.executable, "-c", IN_PROCESS, str(path)], capture_output=True,
                                             text=True, check=True, cwd=ROOT).stdout) for _ in range(max(3, args.reps // 3)))
            rows.append((n, whole, inner))
            print(f"{n:>6} layers: whole process {whole:.3f} s, checking {inner:.4f} s ({1e6 * inner / n:.1f} us/layer)")

    (n0, _, in0), (n1, _, in1), (n2, whole2, in2) = rows
    # Linear means a constant time per layer: compare the two largest sizes, where the fixed
    # cost of a spec (its model, input and expect lines) no longer counts.
    per_layer_ratio = (in2 / n2) / (in1 / n1)
    body = [
        f"Whole processes, median of {args.reps} runs (Keras: {args.keras_reps}), with Python's bytecode cache on "
        "(PYTHONDONTWRITEBYTECODE dropped), as an installed package runs. Goals: `nnc check` of a contract "
        "spec under 0.3 s; 10,000 layers under 1 s, linear.",
        "",
        "| what | seconds | against `nnc check` |",
        "|---|---|---|",
        f"| `nnc check {CONTRACT.name}` | {med(nnc_contract):.3f} s | 1.0x |",
        f"| Keras 3 (torch backend): import, build the same model, `summary()` | {med(keras):.2f} s "
        f"| {med(keras) / med(nnc_contract):.1f}x |",
        f"| `python -c pass` (the interpreter alone) | {med(python):.3f} s | {med(python) / med(nnc_contract):.2f}x |",
        "",
        "Specs of N layers (`dense 8` and `relu`, alternating). *Checking* is parse and check inside the process "
        "(`check_file`), without start-up:",
        "",
        "| layers | `nnc check` (whole process) | checking | per layer | checking time against 100 layers |",
        "|---|---|---|---|---|",
    ]
    for n, whole, inner in rows:
        body.append(f"| {n:,} | {whole:.3f} s | {inner:.4f} s | {1e6 * inner / n:.1f} µs | {inner / in0:.1f}x "
                    f"(layers {n // n0}x) |")
    body += [
        "",
        f"Time per layer at {n2:,} layers against {n1:,}: {per_layer_ratio:.2f}x (1.0 is linear growth, more "
        f"would be super-linear). 10,000 layers: {whole2:.2f} s for the whole process. The grammar's LALR tables "
        "ship with the package as JSON (no pickle, no user cache); the parser builds nnc's AST while "
        "parsing, with no parse tree and no position propagation.",
    ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("bench_check", "Checking: `nnc check` against Keras, and 100 to 10,000 layers", text)


if __name__ == "__main__":
    main()
