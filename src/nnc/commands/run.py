"""nnc run"""

from __future__ import annotations

import sys

HELP = """Run an ONNX model on onnxruntime and print (or save) its output. The input is an .npy
array of [batch, ...] in the model's input shape and dtype (float32 for images and series,
int64 for token ids); it is refused with a message when it does not fit.

--device cuda runs on onnxruntime's CUDA provider or fails saying what is missing: it never
falls back to the CPU. The provider used is reported on stderr."""
EXAMPLE = "nnc run mnist_convnet.onnx --input digits.npy --device cuda -o probs.npy"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL.onnx", help="an ONNX model (from nnc compile, or any with one input)")
    p.add_argument("--input", required=True, metavar="X.npy", help="the input array, with a batch axis first")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    p.add_argument("-o", "--output", metavar="Y.npy", help="save the output here as .npy, - for standard output (default: print it)")


def main(args) -> int:
    import numpy as np

    from nnc.lang.weights import atomic_open
    from nnc.onnx.runtime import Runner, load_input

    x = load_input(args.input)
    runner = Runner(args.model, args.device)
    y = runner.run(x)
    print(f"ran {args.model} on {runner.provider}: input {list(x.shape)} -> output {list(y.shape)}", file=sys.stderr)
    if args.output:
        import io

        buf = io.BytesIO()  # np.save seeks, which a pipe or /dev/stdout cannot
        np.save(buf, y)
        with atomic_open(args.output, inputs=(args.model, args.input)) as f:
            f.write(buf.getbuffer())
        if args.output != "-":
            print(f"wrote {args.output}", file=sys.stderr)
    else:
        with np.printoptions(threshold=200, precision=6, suppress=True):
            print(y)
    return 0
