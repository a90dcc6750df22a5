"""Training speed of the NumPy backend against PyTorch (CPU, 2 threads), on the same data.

Three workloads, as the lecture trains them:
  convnet  mnist_convnet.nnspec: 12,000 samples of 28x28x1, batch 128, SGD lr=0.01 momentum=0.9
           (weight decay 0.0005), sparse categorical cross-entropy
  lstm     imdb_lstm.nnspec: 2,048 sequences of 500 token ids, batch 128, RMSprop lr=0.001
           rho=0.9, binary cross-entropy
  gru      imdb_gru.nnspec: the same, with a GRU (Keras's reset_after=True, as PyTorch's GRU)

Each (workload, framework) pair runs in a subprocess of its own, so its peak memory (ru_maxrss)
is its own: one warm-up batch, then `--epochs` timed epochs. `--rounds` processes per framework
alternate, and the figure is each framework's fastest epoch: other load on a shared machine can
only slow an epoch down.
The data are synthetic (uniform pixels, random ids and labels), generated from the same seed in
every subprocess, so both frameworks see the same arrays. The ratio nnc / PyTorch is the figure
that travels between machines; the goal is at most 1.0.

OPENBLAS_CORETYPE is removed from the subprocesses' environment (some images set it to an
older core, which slows numpy's matrix products); everything else is as the shell has it.
nnc trains as `nnc train` does, with subnormal floats flushed to zero (nnc.engines.numpy.fpenv; run with
NNC_SUBNORMALS=keep to measure IEEE subnormals); PyTorch runs with its defaults.

Every row of the table in BENCHMARKS.md names its CPU (model and vendor, from /proc/cpuinfo) and
when it was measured: a run replaces the rows of its own CPU model and keeps the others, so an
Intel and an AMD machine's figures stand side by side.

    .venv/bin/python bench/bench_train.py                 # every workload, writes BENCHMARKS.md
    .venv/bin/python bench/bench_train.py --epochs 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

SPECS = {"convnet": ROOT / "specs" / "mnist_convnet.nnspec", "lstm": ROOT / "specs" / "imdb_lstm.nnspec",
         "gru": ROOT / "specs" / "imdb_gru.nnspec"}
CONTRACT = [ROOT / "tests" / "data" / "contract", ROOT.parent / "shared" / "contract"]
SAMPLES = {"convnet": 12_000, "lstm": 2_048, "gru": 2_048}
BATCH = 128


def spec_path(workload: str) -> Path:
    name = SPECS[workload].name
    for d in [SPECS[workload].parent] + CONTRACT:
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(name)


def make_data(workload: str):
    import numpy as np

    rng = np.random.default_rng(0)
    n = SAMPLES[workload]
    if workload == "convnet":
        return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, size=n)
    return rng.integers(0, 10_000, size=(n, 500)), rng.integers(0, 2, size=(n, 1)).astype(np.float32)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- nnc ----------------------------------------------------------------------------------------


def nnc_trainer(workload: str):
    """One training step of nnc's backend with the spec's loss and optimizer."""
    import numpy as np

    import nnc
    from nnc.engines.numpy import Network, parallel
    from nnc.lang.model import OptimizerConfig
    from nnc.lang.weights import init_weights

    model = nnc.load(str(spec_path(workload)))
    parallel.keep_freed_memory()  # as nnc.training.loop's Trainer does for a training run
    net = Network(model, init_weights(model, 0))
    cfg = model.train.optimizer if model.train else OptimizerConfig("rmsprop", 0.001)
    loss_name = model.train.loss if model.train else "binary_crossentropy"
    try:  # the project's own losses and optimizers, when present
        from nnc.training.losses import loss_and_grad
        from nnc.training.optim import make_optimizer

        opt = make_optimizer(cfg)
        update = opt.step
    except ImportError:  # pragma: no cover - a minimal stand-in with Keras's update rules
        loss_and_grad, update = _fallback(cfg)
    rng = np.random.default_rng(0)

    def step(x, y):
        z = net.forward(x, training=True, rng=rng)
        _, dz = loss_and_grad(loss_name, z, y, net.final_activation)
        update(net.weights, net.backward(dz))

    return step, net


def _fallback(cfg):
    import numpy as np

    state: dict = {}

    def loss_and_grad(loss, z, y, activation):
        if activation == "softmax":
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            return 0.0, p / len(y)
        return 0.0, (1 / (1 + np.exp(-z)) - y) / y.size

    def update(weights, grads):
        for k, g in grads.items():
            w = weights[k]
            if cfg.name == "sgd":
                w -= cfg.lr * cfg.weight_decay * w
                v = state.setdefault(k, np.zeros_like(w))
                v *= cfg.momentum
                v -= cfg.lr * g
                w += v
            else:
                s = state.setdefault(k, np.zeros_like(w))
                s *= cfg.rho
                s += (1 - cfg.rho) * g * g
                w -= cfg.lr * g / np.sqrt(s + cfg.epsilon)

    return loss_and_grad, update


# --- PyTorch ------------------------------------------------------------------------------------


def torch_trainer(workload: str):
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    nn = torch.nn
    if workload == "convnet":
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
        loss_fn = nn.CrossEntropyLoss()
        prep = lambda x, y: (torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y))
    else:
        class Imdb(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(10_000, 32)
                self.rnn = (nn.GRU if workload == "gru" else nn.LSTM)(32, 32, batch_first=True)
                self.dense = nn.Linear(32, 1)

            def forward(self, x):
                out, _ = self.rnn(self.embedding(x))
                return self.dense(out[:, -1])

        model = Imdb()
        opt = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-7)
        loss_fn = nn.BCEWithLogitsLoss()
        prep = lambda x, y: (torch.from_numpy(x), torch.from_numpy(y))

    def step(x, y):
        tx, ty = prep(x, y)
        opt.zero_grad()
        loss_fn(model(tx), ty).backward()
        opt.step()

    return step, model


# --- one measurement, in its own process ---------------------------------------------------------


def flags(framework: str):
    """The floating-point flags each framework trains with: nnc's Trainer.fit flushes subnormals
    to zero (nnc.engines.numpy.fpenv, unless NNC_SUBNORMALS=keep); PyTorch keeps its defaults."""
    from contextlib import nullcontext

    if framework != "nnc":
        return nullcontext()
    from nnc.engines.numpy import fpenv

    return fpenv.flush_subnormals(blas_workers=True)


def worker(workload: str, framework: str, epochs: int) -> dict:
    from _report import cpu

    x, y = make_data(workload)
    step, _ = (nnc_trainer if framework == "nnc" else torch_trainer)(workload)
    with flags(framework):
        step(x[:BATCH], y[:BATCH])  # warm-up: first allocations, lazy initialization
        before = rss_mb()
        times = []
        for _ in range(epochs):
            t = time.perf_counter()
            for start in range(0, len(x), BATCH):
                step(x[start : start + BATCH], y[start : start + BATCH])
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vendor, model = cpu()
    return {"epoch_s": sum(times) / len(times), "epochs": times, "peak_mb": peak, "before_mb": before,
            "cpu": model, "vendor": vendor}


def profile(workload: str, batches: int) -> str:
    """cProfile of `batches` nnc training steps: the functions that take the time."""
    import cProfile
    import pstats

    x, y = make_data(workload)
    step, _ = nnc_trainer(workload)
    with flags("nnc"):
        step(x[:BATCH], y[:BATCH])
        prof = cProfile.Profile()
        prof.enable()
        for b in range(batches):
            step(x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH])
        prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:14]
    lines = [f"cProfile of {batches} nnc training batches of the {workload} on one thread (NNC_THREADS=1; "
             f"{total:.2f} s in all), by own time:", "", "| own time | share | calls | function |", "|---:|---:|---:|---|"]
    for (file, line, fn), (cc, nc, tt, ct, _) in rows:
        where = f"{Path(file).name}:{line} {_qualname(file, line, fn)}" if line else fn
        lines.append(f"| {tt:.3f} s | {100 * tt / total:.0f}% | {nc} | `{where}` |")
    return "\n".join(lines)


def _qualname(file: str, line: int, fn: str) -> str:
    """Class.method for a profiled function (cProfile names only the function)."""
    import ast

    try:
        tree = ast.parse(Path(file).read_text())
    except (OSError, SyntaxError, ValueError):
        return fn
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.lineno == line:
                    return f"{node.name}.{item.name}"
    return fn


def run_worker(args: list[str], **extra_env: str) -> dict:
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.update(extra_env)
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="processes per framework, alternating (default 2)")
    p.add_argument("--workloads", default="convnet,lstm,gru")
    p.add_argument("--profile-batches", type=int, default=20)
    p.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    p.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "FRAMEWORK"), help=argparse.SUPPRESS)
    p.add_argument("--profile", metavar="WORKLOAD", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.epochs)))
        return 0
    if args.profile:
        print(json.dumps({"text": profile(args.profile, args.profile_batches)}))
        return 0

    from datetime import datetime, timezone

    from _report import commit, cpu, read_section, write_section

    vendor, model = cpu()
    when = f"{datetime.now(timezone.utc):%Y-%m-%d}, {commit()}"
    load_before = os.getloadavg()
    rows, results = [], {}
    for w in args.workloads.split(","):
        # rounds alternate the frameworks, and each keeps its fastest epoch: on a shared machine a
        # burst of other load slows whichever epoch it lands on, never speeds one up
        runs = {"nnc": [], "torch": []}
        for _ in range(args.rounds):
            for fw in ("nnc", "torch"):
                runs[fw].append(run_worker(["--worker", w, fw, "--epochs", str(args.epochs)]))
        r = {fw: {"epoch_s": min(e for run in rs for e in run["epochs"]),
                  "all": [round(e, 2) for run in rs for e in run["epochs"]],
                  "peak_mb": max(run["peak_mb"] for run in rs)} for fw, rs in runs.items()}
        results[w] = r
        ratio = r["nnc"]["epoch_s"] / r["torch"]["epoch_s"]
        rows.append([model, vendor, w, f"{r['nnc']['epoch_s']:.2f} s", f"{r['torch']['epoch_s']:.2f} s",
                     f"**{ratio:.2f}**", f"{r['nnc']['peak_mb']:.0f} MB", f"{r['torch']['peak_mb']:.0f} MB", when])
        print(_row(rows[-1]), f"(all epochs: nnc {r['nnc']['all']}, torch {r['torch']['all']})", flush=True)
    # profiled on one thread: cProfile sees only the thread it runs in
    prof = run_worker(["--profile", "convnet", "--profile-batches", str(args.profile_batches)], NNC_THREADS="1")["text"]
    load_after = os.getloadavg()
    load = (f"Load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load_before)} before, "
            f"{', '.join(f'{v:.2f}' for v in load_after)} after.")
    table = merge_rows(read_section("bench_train"), rows)
    body = "\n".join([
        f"Epoch time of training, NumPy backend (nnc) against PyTorch {_torch_version()} on the CPU with "
        f"2 threads, the same synthetic data; the fastest of {args.rounds * args.epochs} epochs each "
        f"({args.rounds} processes per framework, alternating, {args.epochs} epochs each after a warm-up batch). "
        "convnet: mnist_convnet, 12,000 samples of 28x28x1, batch 128, SGD with momentum. lstm: "
        "imdb_lstm, 2,048 sequences of 500 steps, batch 128, RMSprop; gru: imdb_gru, the same with a GRU. "
        "Goal: ratio at most 1.0. "
        "Peak memory is the peak resident set of each measurement's own process (interpreter, "
        "libraries and data included).",
        "",
        "One row per CPU model and workload: a run replaces its own CPU's rows and keeps the others "
        "(measured: date and commit of each row). The rest of this section is the latest run's, on "
        f"{model} ({vendor}).",
        "",
        TABLE_HEADER,
        TABLE_RULE,
        *[_row(cells) for cells in table],
        "",
        *older_rows_note(table, when),
        "Every epoch (s): " + "; ".join(f"{w}: nnc {r['nnc']['all']}, PyTorch {r['torch']['all']}"
                                         for w, r in results.items()) + ".",
        "",
        load + " OPENBLAS_CORETYPE unset in the measured processes.",
        "",
        _work(results),
        "",
        prof,
        "",
        "What dominates: each convolution followed by a max pool that tiles its output (conv2d_1 "
        "and conv2d_2 with their maxpool2d) runs as one kernel, `ConvMaxPool` "
        "(nnc.engines.numpy.kernels_fused): the convolution computes its outputs in the pool's order, "
        "so the pool is a maximum of whole contiguous blocks and its gradient a masked copy, and the "
        "input gradient is one product per kernel tap added in place, with no column-gradient matrix "
        "and no col2im. Its own time is its matrix products (the im2col product forward; the "
        "kernel-gradient and the per-tap input-gradient products backward), about two thirds of a "
        "step; the elementwise rest is small (`_pool_grad`, `im2col`). The last convolution "
        "(`Conv`, 5x5 -> 3x3) and the dense layers are a few percent. nnc splits each convnet batch "
        "into one chunk per core, run in threads; the profile above runs one chunk on one thread. "
        "The LSTM's time is its two time loops, on one core: forward, a [4u x u] product, one exp "
        "over all four gates (sigmoid as 1/(1+exp(-a)), tanh as 2 sigmoid(2a) - 1) and one tanh "
        "a step; backward, a [u x 4u] product and five multiplies a step. NumPy's float32 exp and "
        "tanh are most of the forward loop (3 and 4-5 ns an element on the AMD EPYC). A second "
        "core (nnc.engines.numpy.parallel.Background) does the long products meanwhile: the input "
        "projection a block of steps ahead of the forward loop, backward's factors a block behind "
        "it, and each finished block's weight and input gradients behind the backward loop; the "
        "input gradient is written feature-major, so the embedding's backward reads each feature "
        "contiguously. The GRU is built the same way (one exp over z and r and one tanh for h~ a "
        "step, the same helper core).",
    ])
    if args.no_write:
        print(body)
    else:
        write_section("bench_train", "Training: NumPy backend against PyTorch", body)
        print(body)
    return 0


# --- the table: one row per CPU model and workload -----------------------------------------------

COLUMNS = ("CPU", "vendor", "workload", "nnc epoch", "PyTorch epoch", "ratio nnc/PyTorch", "nnc peak RSS",
           "PyTorch peak RSS", "measured")
TABLE_HEADER = "| " + " | ".join(COLUMNS) + " |"
TABLE_RULE = "|---|---|---|---:|---:|---:|---:|---:|---|"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_rows(section: str) -> list[list[str]]:
    """The rows of the table in a bench_train section of BENCHMARKS.md, as lists of cells. A
    section written before rows named their CPU (one machine's table, headed `| workload |`)
    gives that machine's CPU and date from its stamp line ("_Measured DATE at commit C on CPU,
    N cores, ...")."""
    lines = section.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("| CPU | vendor | workload |", "| workload |"))),
                 None)
    if start is None:
        return []
    old = lines[start].startswith("| workload |")
    if old:
        m = re.search(r"_Measured (\S+) .*?at commit (\S+) on (.+?), \d+ cores", section)
        if m is None:
            return []
        day, sha, cpu_model = m.groups()
        vendor = next((v for v in ("Intel", "AMD") if v.lower() in cpu_model.lower()), "unknown")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if old:
            cells = [cpu_model, vendor] + cells + [f"{day}, {sha}"]
        if len(cells) == len(COLUMNS):
            rows.append(cells)
    return rows


def merge_rows(section: str | None, new_rows: list[list[str]]) -> list[list[str]]:
    """The new run's rows, and the rows of the section as it was for any other (CPU model,
    workload); by vendor, CPU model and workload."""
    measured = {(r[0], r[2]) for r in new_rows}
    kept = [r for r in table_rows(section or "") if (r[0], r[2]) not in measured]
    return sorted(kept + new_rows, key=lambda r: (r[1], r[0], r[2]))


def older_rows_note(table: list[list[str]], when: str) -> list[str]:
    """A paragraph naming the rows kept from earlier runs (other CPUs, not measured now): they
    predate whatever changed since their commit."""
    older = sorted({(r[0], r[-1]) for r in table if r[-1] != when})
    if not older:
        return []
    which = "; ".join(f"{cpu_model} ({measured})" for cpu_model, measured in older)
    return [f"Rows kept from earlier runs, not measured again in this one: {which}. They predate "
            f"the changes to nnc since their commit (`git log --oneline COMMIT.. -- src/nnc/engines/numpy`).",
            ""]


def _work(results: dict) -> str:
    """Floating-point work per epoch (training ~ 3x the forward's multiply-adds, 2 FLOP each) and
    the rate each framework reaches on it."""
    import nnc

    parts = []
    for w, r in results.items():
        macs = nnc.load(str(spec_path(w))).total_macs
        flop = 6 * macs * SAMPLES[w]
        parts.append(f"{w} {flop / 1e12:.2f} TFLOP per epoch: nnc {flop / r['nnc']['epoch_s'] / 1e9:.0f} GFLOP/s, "
                     f"PyTorch {flop / r['torch']['epoch_s'] / 1e9:.0f} GFLOP/s")
    return "Work: " + "; ".join(parts) + "."


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:  # pragma: no cover
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
