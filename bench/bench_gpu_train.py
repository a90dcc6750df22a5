"""Training on a GPU: nnc's PyTorch engine (`nnc train --engine torch --device cuda`) against a
plain PyTorch loop on the same GPU, for the lecture's two workloads (bench/bench_train.py's data:
the convnet's 12,000 images of 28x28x1 and the LSTM's 2,048 sequences of 500 ids, batch 128).

nnc's side is the shared training loop (nnc.training.loop.Trainer, as the CLI runs it: shuffling, the
per-step loss and metrics, the engine's Keras optimizer rules) without validation or files. The
PyTorch side is what a user would write: bench/torch_twin.py's module, torch.optim (SGD with
momentum, or RMSprop), nn.CrossEntropyLoss/BCEWithLogitsLoss, a DataLoader-free loop over
shuffled index batches on the GPU. The figure is each side's fastest of `--epochs` epochs after
the first (cuDNN's warm-up). TF32 is off on both sides (float32 means float32).

    python bench/bench_gpu_train.py [--epochs N]      # on a machine with a CUDA GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _report import write_section  # noqa: E402
from bench_train import BATCH, make_data, spec_path  # noqa: E402


def nnc_epochs(workload: str, epochs: int) -> list[float]:
    import nnc
    from nnc.training.data import Dataset
    from nnc.training.loop import Trainer

    model = nnc.load(str(spec_path(workload)))
    cfg = dataclasses.replace(model.train, epochs=epochs, batch_size=BATCH, validation_split=0.0,
                              early_stopping=None)
    x, y = make_data(workload)
    times: list[float] = []

    class Clock:
        def on_epoch_begin(self, epoch, logs):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs):
            times.append(time.perf_counter() - self.t)

    Trainer(model, cfg, Dataset("bench", x, y), None, engine="torch", device="cuda", callbacks=(Clock(),)).fit()
    return times


def torch_epochs(workload: str, epochs: int) -> list[float]:
    import torch
    from torch import nn

    import nnc
    from nnc.lang.weights import init_weights
    from torch_twin import torch_model

    model = nnc.load(str(spec_path(workload)))
    net = torch_model(model, init_weights(model, 0))
    # the twin ends in softmax/sigmoid modules; train on the logits as a user would
    net = nn.Sequential(*list(net)[:-1]).cuda().train()
    o = model.train.optimizer
    if o.name == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
    else:
        opt = torch.optim.RMSprop(net.parameters(), lr=o.lr, alpha=o.rho, eps=o.epsilon)
        loss_fn = nn.BCEWithLogitsLoss()
    xn, yn = make_data(workload)
    x = torch.from_numpy(xn).cuda()
    y = torch.from_numpy(yn).cuda()
    if workload == "convnet":
        y = y.long()
    n = len(x)
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        order = torch.randperm(n, device="cuda")
        for s in range(0, n, BATCH):
            idx = order[s : s + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss.item()  # a user's loop reads the loss each step, as nnc's progress does
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workloads", default="convnet,lstm")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu_train: no CUDA GPU here")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for w in args.workloads.split(","):
        a = nnc_epochs(w, args.epochs)
        b = torch_epochs(w, args.epochs)
        rows.append((w, a, b))
        print(f"{w}: nnc {[round(t, 3) for t in a]}, torch {[round(t, 3) for t in b]}", flush=True)
    lines = [f"GPU: {gpu}, torch {torch.__version__}, TF32 off. Seconds per epoch (the fastest after the first "
             "epoch); ratio nnc / PyTorch (below 1: nnc is faster).", "",
             "| workload | nnc --engine torch --device cuda | plain PyTorch loop | ratio |", "|---|---|---|---|"]
    for w, a, b in rows:
        ta, tb = min(a[1:] or a), min(b[1:] or b)
        lines.append(f"| {w} | {ta:.3f} s | {tb:.3f} s | {ta / tb:.2f} |")
    lines += ["", "Every epoch (s): " + "; ".join(f"{w}: nnc {[round(t, 3) for t in a]}, PyTorch "
                                                  f"{[round(t, 3) for t in b]}" for w, a, b in rows) + "."]
    write_section("bench_gpu_train", "Training on a GPU: nnc's PyTorch engine against a plain PyTorch loop",
                  "\n".join(lines))
    print("wrote BENCHMARKS.md section bench_gpu_train")


if __name__ == "__main__":
    main()
