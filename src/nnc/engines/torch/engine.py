"""The PyTorch engine's training step and inference: what the shared training loop
(nnc.training.loop.Trainer) asks of an engine, computed as the NumPy engine computes it.

    engine = TorchEngine(model, weights, cfg, device="cuda")   # cfg: nnc.lang.model.TrainConfig
    value, z = engine.train_step(xb, yb, rng)   # one optimizer step; the loss (penalty included), z
    z = engine.logits(x, batch_size)            # inference, before the final softmax/sigmoid
    engine.weights                              # {name: array}: the current weights, Keras layouts
    engine.state_arrays(); engine.load_state(arrays, iterations)   # nnc.training.optim's checkpoint names

A training step is Trainer.fit's NumPy step, on tensors: the forward pass in training mode
(dropout masks from `rng`'s uniform draws, taken as nnc.engines.numpy.Network takes them, so that both
engines drop the same units), the loss of nnc.training.losses.loss_and_grad with Keras's reduction (the
mean over samples and positions, class weights multiplying each sample's term) computed from the
logits with the same fused softmax/sigmoid, the l1/l2 penalty of nnc.training.losses.regularization on the
weights of this step, backward, and the optimizer's step (nnc.engines.torch.optim). A loss that is
not finite is returned without a step (the loop stops there, as it does with NumPy).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from nnc.engines.torch.distributed import World
from nnc.engines.torch.modules import build
from nnc.engines.torch.optim import make_optimizer
from nnc.engines.torch.standalone import Batchnorm
from nnc.lang.errors import UserError

EPSILON = 1e-7  # keras.config.epsilon(), as nnc.training.losses


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """`cpu`, `cuda` or `cuda:N` as a torch.device; a CUDA device PyTorch cannot use is a
    UserError (the engine never falls back to the CPU silently)."""
    d = str(device)
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            build_note = "" if torch.version.cuda else f" (this torch, {torch.__version__}, is a CPU-only build)"
            raise UserError(f"--device {d}: PyTorch finds no usable CUDA GPU{build_note}",
                            help="use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        index = int(d.split(":", 1)[1]) if ":" in d else torch.cuda.current_device()
        if not 0 <= index < torch.cuda.device_count():
            raise UserError(f"--device {d}: there are {torch.cuda.device_count()} CUDA device(s), 0.."
                            f"{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    raise UserError(f"unknown device {d!r}: use cpu or cuda (cuda:N for the N-th GPU)")


# --- losses: nnc.training.losses on tensors --------------------------------------------------------------


def _final(z, activation):
    if activation == "softmax":
        return torch.softmax(z, dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    return z


def _clip_open(p, lo, hi):
    """clip(p, lo, hi) whose gradient is p's strictly inside (lo, hi) and 0 elsewhere, as
    nnc.training.losses writes the derivative of its clipped logs (torch.clamp passes it at the bounds too)."""
    inside = (p > lo) & (p < hi)
    return torch.where(inside, p, p.detach().clamp(lo, hi))


def loss_terms(loss: str, z: torch.Tensor, y: torch.Tensor, activation: str | None, delta: float = 1.0,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Each position's loss (shaped z.shape[:-1]), differentiable in z: nnc.training.losses.loss_and_grad's
    terms, its gradients those the NumPy engine writes by hand."""
    c = z.shape[-1]
    if loss == "sparse_categorical_crossentropy":
        if label_smoothing:
            raise ValueError("sparse_categorical_crossentropy takes no label_smoothing (as Keras's)")
        if activation == "softmax":  # log-softmax fused: finite for any z, gradient softmax - onehot
            return F.cross_entropy(z.reshape(-1, c), y.reshape(-1), reduction="none").reshape(z.shape[:-1])
        y = F.one_hot(y, c).to(z.dtype)
        loss = "categorical_crossentropy"
    elif label_smoothing and loss in ("categorical_crossentropy", "binary_crossentropy"):
        ls = label_smoothing
        y = y * (1 - ls) + (ls / c if loss == "categorical_crossentropy" else 0.5 * ls)
    if loss == "categorical_crossentropy":
        if activation == "softmax":
            return -(y * F.log_softmax(z, dim=-1)).sum(dim=-1)
        p = _final(z, activation)  # Keras: normalize, clip, log
        q = p / p.sum(dim=-1, keepdim=True)
        return -(y * torch.log(_clip_open(q, EPSILON, 1 - EPSILON))).sum(dim=-1)
    if loss == "binary_crossentropy":
        if activation == "sigmoid":  # max(z, 0) - z y + log(1 + e^-|z|); gradient sigmoid(z) - y
            return F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(dim=-1) / c
        pc = _clip_open(_final(z, activation), EPSILON, 1 - EPSILON)
        return -(y * torch.log(pc) + (1 - y) * torch.log(1 - pc)).sum(dim=-1) / c
    if loss in ("mse", "mae", "huber"):
        diff = _final(z, activation) - y
        if loss == "mse":
            return diff.square().mean(dim=-1)
        if loss == "mae":
            return diff.abs().mean(dim=-1)
        small = diff.abs() <= delta  # 0.5 e^2 inside delta, delta (|e| - 0.5 delta) beyond
        return torch.where(small, 0.5 * diff.square(), delta * diff.abs() - 0.5 * delta * delta).mean(dim=-1)
    if loss == "kl_divergence":
        yc = y.clamp(EPSILON, 1)
        pc = _final(z, activation).clamp(EPSILON, 1)  # clamp's gradient passes on [EPSILON, 1], as nnc.training.losses'
        return (yc * (torch.log(yc) - torch.log(pc))).sum(dim=-1)
    raise ValueError(f"unknown loss {loss!r}")


def loss_value(loss: str, z, y, activation, sample_weight=None, count: int | None = None,
               **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(the mean loss to differentiate, in z's dtype; the same in float64 for reporting): Keras's
    sum over positions (each sample's terms times its weight) divided by their number (`count`:
    the global batch's number, where z is one process's share of it)."""
    terms = loss_terms(loss, z, y, activation, **options)
    m = count if count is not None else max(math.prod(z.shape[:-1]), 1)
    if sample_weight is not None:
        w = sample_weight.reshape(tuple(sample_weight.shape) + (1,) * (terms.dim() - sample_weight.dim()))
        report = (terms.detach().double() * w.double()).sum() / m
        return (terms * w.to(terms.dtype)).sum() / m, report
    return terms.sum() / m, terms.detach().double().sum() / m


# --- the engine ---------------------------------------------------------------------------------


class TorchEngine:
    name = "torch"

    def __init__(self, model, weights: dict[str, np.ndarray], cfg, device="cpu", dtype=torch.float32,
                 tf32: bool = False, world: World | None = None):
        self.model, self.cfg = model, cfg
        self.world = world if world is not None and world.size > 1 else None
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            # float32 means float32: cuDNN's convolutions would otherwise round their inputs to
            # TF32 (10-bit mantissas), 1e-3 away from the NumPy engine. Process-wide, as torch's flags are.
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.net = build(model, weights, device=self.device, dtype=dtype)
        self.final_activation = self.net.final_activation
        self.ddp = None
        if self.world is not None:
            # gradients averaged across the processes by DistributedDataParallel (its buckets and
            # overlap); rank 0's weights and buffers are broadcast to every rank here
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            for module in self.net.modules():  # batchnorm's statistics: the global batch's
                if isinstance(module, Batchnorm):
                    module.sync = True
        self.params = self.net.trainable()
        schedule = getattr(cfg, "lr_schedule", None)
        self.opt = make_optimizer(cfg.optimizer, schedule, self.device)
        self.loss_options = {"delta": float(getattr(cfg, "huber_delta", 1.0)),
                             "label_smoothing": float(getattr(cfg, "label_smoothing", 0.0))}
        # nnc.training.losses.regularization's penalties: (Keras name, l1, l2) per regularized weight
        self.penalties = []
        for layer in model.layers:
            l1, l2 = float(layer.options.get("l1", 0.0) or 0.0), float(layer.options.get("l2", 0.0) or 0.0)
            if l1 or l2:
                self.penalties += [(f"{layer.name}.{s}", l1, l2) for s in layer.spec.regularized(layer.options)]

    # -- weights and optimizer state, as numpy (checkpoints)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self.net.weights_numpy()

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.net.load_numpy(weights)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.opt.state_arrays()

    def load_state(self, arrays: dict[str, np.ndarray], iterations: int) -> None:
        self.opt.load_state(arrays, iterations, dtype=self.net.dtype)

    # -- training

    def _targets(self, yb) -> torch.Tensor:
        y = np.asarray(yb)
        if self.cfg.loss == "sparse_categorical_crossentropy":
            return torch.from_numpy(y.astype(np.int64, copy=False)).to(self.device)
        return torch.from_numpy(np.ascontiguousarray(y)).to(device=self.device, dtype=self.net.dtype)

    def _penalty(self):
        """(the l1/l2 penalty to differentiate, the same in float64), or (None, 0.0)."""
        if not self.penalties:
            return None, None
        total, report = None, None
        for name, l1, l2 in self.penalties:
            w = self.params[name]
            wd = w.detach().double()
            for coef, term, rep in ((l1, lambda: w.abs().sum(), lambda: wd.abs().sum()),
                                    (l2, lambda: w.square().sum(), lambda: wd.square().sum())):
                if coef:
                    t, r = coef * term(), coef * rep()
                    total = t if total is None else total + t
                    report = r if report is None else report + r
        return total, report

    def train_step(self, xb, yb, rng: np.random.Generator | None) -> tuple[float, np.ndarray]:
        """One step on a batch: (the loss with the penalty, as a float; z, the logits, as numpy).

        Under DistributedDataParallel every process is handed the same global batch and computes
        its contiguous share (numpy.array_split order): its loss is its share of the global
        batch's mean, scaled by the number of processes since DDP averages the gradients, so the
        step equals one process's step on the whole batch; the logits of all shares are gathered,
        so every process returns the whole batch's z and loss (metrics and logs agree everywhere)."""
        net = self.net
        net.train()
        n = len(xb)
        mine = None
        if self.world is not None:
            mine = np.array_split(np.arange(n), self.world.size)[self.world.rank]
            xb_all, yb = xb, np.asarray(yb)[mine]
            xb = np.asarray(xb_all)[mine]
        x = net.prepare(xb)
        noise = None
        if rng is not None:
            noise = net.draw_noise(n, rng)  # the global batch's draws, so every process takes the same
            if mine is not None:
                noise = {k: [t[mine[0]:mine[-1] + 1] if len(mine) and t.shape[:1] == (n,) else t for t in v]
                         for k, v in noise.items()}
        z = (self.ddp or net)(x, noise)
        y = self._targets(yb)
        sample_weight = None
        if getattr(self.cfg, "class_weight", ()):
            from nnc.training.losses import class_sample_weights

            sample_weight = torch.from_numpy(class_sample_weights(yb, self.cfg.class_weight)).to(self.device)
        count = None if mine is None else max(n * math.prod(z.shape[1:-1]), 1)
        loss, report = loss_value(self.cfg.loss, z, y, self.final_activation, sample_weight, count=count,
                                  **self.loss_options)
        if self.world is not None:
            loss = loss * self.world.size  # DDP averages the processes' gradients: their sum is wanted
            report = self.world.all_reduce_sum(report)
        penalty, penalty_report = self._penalty()
        if penalty is not None:
            loss, report = loss + penalty, report + penalty_report
        value = float(report)
        z_out = z.detach()
        z_out = (self.world.gather_batch(z_out, n) if self.world is not None else z_out).cpu().numpy()
        if not math.isfinite(value):
            return value, z_out  # the loop stops on it: no step with a broken loss
        for p in self.params.values():
            p.grad = None
        loss.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in self.params.items()}
        self.opt.step(self.params, grads)
        return value, z_out

    # -- inference

    @torch.no_grad()
    def logits(self, x, batch_size: int = 1024) -> np.ndarray:
        """Inference (dropout off) before the final activation, batch by batch."""
        net = self.net
        net.eval()
        outs = [net(net.prepare(x[s : s + batch_size])).cpu().numpy() for s in range(0, len(x), batch_size)]
        if not outs:
            return np.zeros((0,) + tuple(self.model.output_shape), dtype=net.np_dtype)
        return np.concatenate(outs)
