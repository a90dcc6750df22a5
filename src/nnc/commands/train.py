"""nnc train"""

from __future__ import annotations

import os
import sys

HELP = """Train a spec with nnc's NumPy engine (no deep-learning framework needed) or with
PyTorch (--engine torch, on the CPU or --device cuda), as Keras's fit() would: the spec's train block gives loss, optimizer, metrics, epochs, batch size,
validation split and seed; each can be overridden by a flag. A spec without a train block
trains with Keras's defaults and a loss chosen from its output.

--data takes an .npz with x_train, y_train[, x_test, y_test] (the layout of Keras's mnist.npz
and imdb.npz), a .csv (a row per sample: the input's values, then the target), or `digits`
(8x8 handwritten digits shipped with nnc). Data that does not fit the spec is refused before
training starts.

DIR receives weights.npz (the trained weights, for `nnc compile --weights`), history.json
(loss and metrics per epoch), curves.png, and state.npz: each epoch is checkpointed
atomically, so a run that was stopped (Ctrl-C, a kill, a crash) continues with
`nnc train --resume DIR` and ends with the same weights as an uninterrupted run (with either
engine: a run may continue on the other).

Several processes: `torchrun --nproc-per-node=N --no-python nnc train FILE --engine torch ...`
trains with DistributedDataParallel (gloo on the CPU, NCCL with --device cuda); batch_size is the
global batch, and rank 0 alone writes DIR and prints."""
EXAMPLE = "nnc train specs/digits_convnet.nnspec --data digits --out runs/digits_convnet"

def add_arguments(p):
    from nnc.training.flags import add_overrides

    p.add_argument("file", metavar="FILE", nargs="?", help="the .nnspec file (optional with --resume)")
    p.add_argument("--data", metavar="DATA", help="an .npz, a .csv, 'digits' or 'sine' (built in)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load object arrays (ragged token lists) from an .npz with pickle, which runs any code "
                        "the file holds: only for files you trust, such as Keras's imdb.npz")
    p.add_argument("--out", metavar="DIR", help="where the run is written (default: runs/MODEL_NAME)")
    p.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    p.add_argument("--engine", choices=("numpy", "torch"), default="numpy",
                   help="who computes: nnc's NumPy engine (default) or PyTorch (pip install 'nnc[torch]')")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="with --engine torch: cuda trains on the GPU (never falls back to the CPU)")
    add_overrides(p)
    p.add_argument("--keep-subnormals", action="store_true",
                   help="compute with IEEE subnormal floats instead of flushing them to zero (slower on Intel "
                        "CPUs; the same as NNC_SUBNORMALS=keep)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _world(args):
    """The processes torchrun started (WORLD_SIZE > 1), joined into their process group; None alone."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        size = 1
    if size <= 1:
        return None
    from nnc.lang.errors import UserError

    if args.engine != "torch":
        raise UserError(f"this is one of {size} processes (WORLD_SIZE, as torchrun sets it): several processes train "
                        "with the PyTorch engine only", help="add --engine torch")
    from nnc.engines.torch.distributed import World

    world = World.from_env()
    world.init(args.device)
    return world


def main(args) -> int:
    from nnc.commands import checked_model
    from nnc.lang.checker import check_file, check_source
    from nnc.lang.errors import UserError
    from nnc.training.data import BUILTIN, load_data
    from nnc.training.flags import override_actions
    from nnc.training.loop import (
        CURVES,
        HISTORY,
        STATE,
        WEIGHTS,
        Progress,
        Trainer,
        claim_run_dir,
        config_from_json,
        default_config,
        describe,
        evaluate,
        override,
        plot_curves,
        read_state,
        refuse_new_run_dir,
        validate_config,
        validate_for_model,
    )

    world = _world(args)  # the processes torchrun started, or None
    leader = world is None or world.leader
    progress = Progress(quiet=args.quiet or not leader)  # rank 0 alone prints
    if args.keep_subnormals:  # read by nnc.engines.numpy.fpenv where the training loop sets its flags
        from nnc.engines.numpy.fpenv import ENV

        os.environ[ENV] = "keep"
    meta = arrays = None
    if args.resume:
        if not os.path.isdir(args.resume):
            raise UserError(f"cannot resume from {args.resume}: it holds no {STATE} (there is no such folder)")
        lock = claim_run_dir(args.resume) if leader else None  # noqa: F841 (held until the process ends)
        arrays, meta = read_state(args.resume)
        # every override but --epochs is fixed: the run continues with the settings it started with
        given = [k for k in override_actions() if k != "epochs" and getattr(args, k) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UserError(f"{flag} cannot change when resuming: the run continues with the settings it started "
                            f"with (only --epochs may raise the total)")
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise UserError("--out and --resume name different folders; a resumed run writes where it started")
        out = args.resume
        if args.file:
            r = check_file(args.file)
        else:
            r = check_source(meta["spec_source"], meta["spec_path"] or "<spec from state.npz>")
            if r.model is not None:
                r.model.path = meta["spec_path"] or None
    else:
        if not args.file:
            raise UserError("nnc train needs a spec FILE (or --resume DIR)")
        r = check_file(args.file)
    model = checked_model(r)

    if meta is not None:
        cfg = config_from_json(meta["config"])
        if args.epochs is not None:
            import dataclasses

            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        data_arg = args.data or meta["data"]
        if data_arg == "<arrays>":  # what nnc.fit records: there is no file to read again
            raise UserError(f"{out} was trained on arrays in memory (nnc.fit), so there is no data file to resume with",
                            help="continue it with nnc.fit(..., out=DIR, resume=True), or pass --data with the same "
                                 "arrays in an .npz")
    else:
        if model.train is not None:
            cfg = model.train
        else:
            cfg, note = default_config(model)
            progress.say(note)
        cfg = override(cfg, **{k: getattr(args, k) for k in override_actions()})
        if not args.data:
            raise UserError("nnc train needs --data: an .npz, a .csv, 'digits' or 'sine'")
        data_arg = args.data
        out = args.out or os.path.join("runs", model.name)
        refuse_new_run_dir(out, f"continue it with `nnc train --resume {out}`, or choose another --out")
    validate_config(cfg)  # before the folder is claimed: a refusal leaves nothing
    validate_for_model(model, cfg)
    data_ref = data_arg if data_arg in BUILTIN else os.path.abspath(data_arg)
    data = load_data(data_ref, model, cfg.loss, allow_pickle=args.allow_pickle)
    if meta is None and leader:  # a new run: claim the folder once the data is known to fit (a refusal leaves nothing)
        lock = claim_run_dir(out)  # noqa: F841 (held until the process ends)
        if os.path.exists(os.path.join(out, STATE)):  # another run finished there meanwhile
            raise UserError(f"{out} already holds a training run ({STATE})",
                            help=f"continue it with `nnc train --resume {out}`, or choose another --out")
    device = args.device
    if world is not None and device == "cuda":
        device = f"cuda:{world.local_rank}"  # one GPU per process
    trainer = Trainer(model, cfg, data, out if leader else None, spec_source=r.source, progress=progress,
                      engine=args.engine, device=device, world=world)
    if meta is not None:
        trainer.restore(arrays, meta)
        # weights.npz and history.json derive from state.npz: a run killed between writing them
        # (or a finished run whose weights.npz was lost) gets them back from the state
        trainer.save()
        if trainer.finished:
            progress.say(f"{out}: the run already finished ({trainer.state.epoch} epochs"
                         + (", stopped early" if trainer.state.stopped_epoch is not None else "") + ")")
        else:
            progress.say(f"resuming {model.name} in {out} after epoch {trainer.state.epoch} of {cfg.epochs}")
    else:
        n_val = 0 if trainer.x_val is None else len(trainer.x_val)
        progress.say(f"training {model.name} on {data_arg}: {len(trainer.x)} samples"
                     + (f", {n_val} for validation" if n_val else ""))
        progress.say(describe(cfg))
        for note in data.notes:
            progress.say(note)
    try:
        history = trainer.fit()
    except KeyboardInterrupt:
        done = trainer.state.epoch
        where = (f"{out} holds the run after epoch {done}" if done else "no epoch finished, nothing was saved")
        print(f"\nnnc train: interrupted in epoch {done + 1}/{cfg.epochs}; {where}", file=sys.stderr)
        if done:
            print(f"continue with: nnc train --resume {out}", file=sys.stderr)
        return 130
    if not leader:
        return 0
    plot_curves(history, os.path.join(out, CURVES), title=model.name)
    if data.x_test is not None:
        test = evaluate(trainer.net, data.x_test, data.y_test, cfg.loss, cfg.metrics, cfg=cfg)
        progress.say(f"test ({len(data.x_test)} samples): " + " - ".join(f"{k}: {v:.4f}" for k, v in test.items()))
    progress.say(f"wrote {', '.join(os.path.join(out, f) for f in (WEIGHTS, HISTORY, CURVES, STATE))}")
    return 0
