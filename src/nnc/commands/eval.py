"""nnc eval"""

from __future__ import annotations

import json

HELP = """Evaluate trained weights on a data set's test split (x_test, y_test; a file without them,
such as a .csv, is evaluated whole): the loss and metrics of the spec's train block, computed
as Keras's evaluate() computes them, with dropout off. --engine torch computes them with
PyTorch (on the CPU, or --device cuda): the same numbers."""
EXAMPLE = "nnc eval specs/digits_convnet.nnspec --weights runs/digits_convnet/weights.npz --data digits --format json"


def add_arguments(p):
    p.add_argument("file", metavar="FILE", help="the .nnspec file")
    p.add_argument("--weights", metavar="CKPT.npz", required=True, help="trained weights (nnc train's weights.npz)")
    p.add_argument("--data", metavar="DATA", required=True, help="an .npz, a .csv, 'digits' or 'sine' (built in)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load object arrays (ragged token lists) from an .npz with pickle, which runs any code "
                        "the file holds: only for files you trust, such as Keras's imdb.npz")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="samples per forward pass (default: 256)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--engine", choices=("numpy", "torch"), default="numpy",
                   help="who computes: nnc's NumPy engine (default) or PyTorch (pip install 'nnc[torch]')")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="with --engine torch: cuda evaluates on the GPU (never falls back to the CPU)")


def main(args) -> int:
    from nnc.commands import checked_model
    from nnc.lang.checker import check_file
    from nnc.lang.errors import UserError

    r = check_file(args.file)
    model = checked_model(r)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, received {args.batch_size}")
    if args.device != "cpu" and args.engine != "torch":
        raise UserError(f"--device {args.device} is for the PyTorch engine", help="add --engine torch")
    from nnc.engines.numpy import Network
    from nnc.lang.weights import load_checkpoint
    from nnc.training.data import load_data
    from nnc.training.loop import EVAL_SCHEMA_VERSION, default_config, evaluate

    cfg = model.train or default_config(model)[0]
    data = load_data(args.data, model, cfg.loss, allow_pickle=args.allow_pickle)
    weights = load_checkpoint(args.weights, model)
    if data.x_test is not None:
        x, y, split = data.x_test, data.y_test, "test"
    else:
        x, y, split = data.x_train, data.y_train, "all"
    if args.engine == "torch":
        from nnc.engines.torch import TorchEngine  # a UserError naming pip install 'nnc[torch]' without torch

        net = TorchEngine(model, weights, cfg, device=args.device)
    else:
        net = Network(model, weights)
    result = evaluate(net, x, y, cfg.loss, cfg.metrics, args.batch_size, cfg=cfg)
    if args.format == "json":
        print(json.dumps({"schema_version": EVAL_SCHEMA_VERSION, "model": model.name, "data": args.data,
                          "split": split, "samples": int(len(x)), "loss_function": cfg.loss, **result}, indent=2))
    else:
        what = "test split" if split == "test" else "every sample (the data has no x_test, y_test)"
        print(f"{model.name} on {args.data}, {what}, {len(x)} samples: "
              + " - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
    return 0
