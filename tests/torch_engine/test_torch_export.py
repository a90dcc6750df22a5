"""`nnc export torch`: the standalone PyTorch file against nnc's NumPy engine.

Every spec of specs/, every kind and option case of the engine tests
(tests/backend/test_backend_gradients.py's CASES, tests/torch_engine/test_torch_engine.py's) and
every block case (tests/onnx/block_cases.py) is exported (model.py and its state_dict), then
loaded in a clean interpreter that has torch and nothing else: `python -I -S` with only torch's site-packages on sys.path (so nnc, installed there
as an editable finder, cannot be imported: checked) and numpy blocked. Its outputs, in eval mode
and (for the models without dropout) in training mode with batchnorm's moving statistics after
the step, must be the NumPy engine's within 1e-5 (float32, relative to the output's norm). The
NumPy engine is itself held to Keras and finite differences elsewhere. All cases go through one
subprocess."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "backend"))
sys.path.insert(0, str(HERE.parent / "onnx"))

from block_cases import BLOCK_SPECS, block_model  # noqa: E402
from test_backend_gradients import CASES, build as spec_model, make_inputs, make_weights  # noqa: E402
from test_torch_engine import CASES as STEP_CASES  # noqa: E402

import nnc  # noqa: E402
from nnc.cli import main  # noqa: E402
from nnc.engines.numpy import Network  # noqa: E402
from nnc.engines.torch.layers import MERGE_FUNCTIONS, TORCH_EXPORTS  # noqa: E402
from nnc.lang.kinds import DROPOUT_KINDS, KINDS  # noqa: E402
from nnc.lang.model import MERGES  # noqa: E402
from nnc.lang.weights import init_weights, save_checkpoint  # noqa: E402
from nnc.tools import torch_export  # noqa: E402

SPECS = sorted((HERE.parents[1] / "specs").glob("*.nnspec"))
TORCH_SITE = str(Path(torch.__file__).resolve().parents[1])

# Run in the clean interpreter: for each job, import its model file by path, load its state_dict,
# run the saved input in eval mode (and, where asked, in training mode), save what came out.
RUNNER = r"""
import importlib.util, json, sys, warnings
sys.modules["numpy"] = None  # the file must not need numpy (torch runs without it)
warnings.simplefilter("ignore")
try:
    import nnc
except ImportError:
    pass
else:
    raise SystemExit("nnc is importable in the clean interpreter: " + nnc.__file__)
import torch

jobs = json.load(open(sys.argv[1]))
for job in jobs:
    spec = importlib.util.spec_from_file_location(job["module"], job["py"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load(job["pt"])
    x = torch.load(job["x"], weights_only=True)
    out = {}
    with torch.no_grad():
        out["eval"] = net(x)
        if job["train"]:
            torch.manual_seed(0)
            net.train()
            out["train"] = net(x)
            out["state"] = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(out, job["out"])
print("ran", len(jobs))
"""


def start_clean(jobs: list[dict], tmp_path: Path) -> subprocess.Popen:
    """The clean interpreter running RUNNER on `jobs` (in the background: wait with finish())."""
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "runner.py").write_text(f"import sys\nsys.path.append({TORCH_SITE!r})\n" + RUNNER)
    return subprocess.Popen([sys.executable, "-I", "-S", str(tmp_path / "runner.py"), str(tmp_path / "jobs.json")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def rel(want, got) -> float:
    return float(np.linalg.norm(want - got) / max(np.linalg.norm(want), 1e-30))


def _has_dropout(model) -> bool:
    return any(layer.kind in DROPOUT_KINDS or layer.options.get("dropout") or layer.options.get("recurrent_dropout")
               for layer in model.layers)


def test_every_kind_and_merge_has_an_export():
    missing = sorted(set(KINDS) - set(TORCH_EXPORTS))
    assert not missing, f"kinds without an export (nnc.engines.torch.layers.TORCH_EXPORTS): {missing}"
    missing = sorted(set(MERGES) - set(MERGE_FUNCTIONS))
    assert not missing, f"merges without an export (nnc.engines.torch.layers.MERGE_FUNCTIONS): {missing}"
    _, defs, _ = torch_export.standalone_definitions()
    named = {TORCH_EXPORTS[k](layer)[0] for inp, body in CASES
             for layer in spec_model(inp, body).layers for k in [layer.kind]}
    assert named | set(MERGE_FUNCTIONS.values()) <= set(defs)


def test_the_standalone_source_imports_torch_only():
    tree = ast.parse(torch_export.STANDALONE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"math", "torch", "os"}, imported


def _job(tmp_path, name, model, weights, x, train):
    d = tmp_path / name
    d.mkdir()
    py, pt = d / f"{name}.py", d / f"{name}.pt"
    torch_export.write(model, weights, str(py), str(pt))
    torch.save(torch.from_numpy(x), d / "x.pt")
    return {"module": name, "py": str(py), "pt": str(pt), "x": str(d / "x.pt"), "out": str(d / "out.pt"),
            "train": train}


def test_exported_files_match_the_numpy_engine(tmp_path):
    """Every kind, option and block case with random weights, every spec with its initial
    weights (exported by the command itself), in one clean subprocess."""
    rng = np.random.default_rng(0)
    cases = [(f"case{i}", body.replace("\n", " / "), spec_model(inp, body)) for i, (inp, body) in enumerate(CASES)]
    cases += [(f"block_{name}", name, block_model(name)) for name in BLOCK_SPECS]
    cases += [(f"step_{name}", name, nnc.loads(f"model t\ninput x: {inp}\n{body}\n"))
              for name, (inp, body, *_) in STEP_CASES.items()]
    cases += [("named", "layers named forward, eval, layer_eval", nnc.loads(NAMED))]
    jobs, checks = [], []
    for name, what, model in cases:
        w = {k: v.astype(np.float32) for k, v in make_weights(model, rng).items()}
        x = make_inputs(model, rng, n=4)
        x = x if x.dtype == np.int64 else x.astype(np.float32)
        jobs.append(_job(tmp_path, name, model, w, x, not _has_dropout(model)))
        checks.append((what, model, w, x))
    for path in SPECS:  # through the command: model.py and model.pt, the seed-0 weights
        model = nnc.load(str(path))
        d = tmp_path / f"spec_{path.stem}"
        d.mkdir()
        assert main(["export", "torch", str(path), "-o", str(d / "model.py")]) == 0
        x = make_inputs(model, rng, n=2)
        x = x if x.dtype == np.int64 else x.astype(np.float32)
        torch.save(torch.from_numpy(x), d / "x.pt")
        jobs.append({"module": "model", "py": str(d / "model.py"), "pt": str(d / "model.pt"), "x": str(d / "x.pt"),
                     "out": str(d / "out.pt"), "train": False})
        checks.append((path.name, model, init_weights(model, 0), x))
    # dropout in training mode only: units (whole channels for spatial dropout) zeroed, the kept
    # ones scaled by 1 / (1 - rate); eval mode is the identity
    dropouts = []
    for name, body, shape in (("dropout", "dropout 0.4", (4000,)), ("spatial", "spatial_dropout2d 0.4", (3, 2, 500))):
        model = nnc.loads(f"model {name}\ninput x: float32[{', '.join(map(str, shape))}]\n{body}\n")
        dropouts.append(_job(tmp_path, name, model, {}, np.ones((2,) + shape, np.float32), True))
    proc = start_clean(jobs + dropouts, tmp_path)

    expected = []  # the NumPy engine's, while the clean interpreter runs
    for (what, model, w, x), job in zip(checks, jobs):
        net = Network(model, {k: v.astype(np.float32) for k, v in w.items()}, dtype=np.float32)
        want = {"eval": net.predict(x)}
        if job["train"]:  # batch statistics, and the moving ones updated as Keras updates them
            want["train"] = net.apply_final(net.forward(x, training=True, rng=np.random.default_rng(0)))
            want["state"] = {key: net.weights[ckpt] for key, ckpt in torch_export.state_dict_keys(model).items()}
        expected.append(want)
    finish(proc)

    failures = []
    for (what, *_), job, want in zip(checks, jobs, expected):
        got = torch.load(job["out"], weights_only=True)
        for part in ("eval", "train"):
            if part in want and not (err := rel(want[part], got[part].numpy())) <= 1e-5:
                failures.append(f"{what} ({part} mode): {err:.2e}")
        for key, w in want.get("state", {}).items():
            if not (err := rel(w, got["state"][key].numpy())) <= 1e-5:
                failures.append(f"{what}: {key} after a training-mode call: {err:.2e}")
    assert not failures, "; ".join(failures)
    for job in dropouts:
        got = torch.load(job["out"], weights_only=True)
        assert torch.equal(got["eval"], torch.ones_like(got["eval"]))
        y = got["train"].numpy()
        assert set(np.unique(y).tolist()) <= {0.0, float(np.float32(1 / 0.6))}
        assert abs((y == 0).mean() - 0.4) < 0.05
        if job["module"] == "spatial":  # one draw per sample and channel
            assert (y == y[:, :1, :1, :]).all()


def test_the_command_writes_the_module_and_the_state_dict(tmp_path, capsys):
    spec = next(p for p in SPECS if p.stem == "digits_convnet")
    model = nnc.load(str(spec))
    w = {k: v.astype(np.float32) for k, v in make_weights(model, np.random.default_rng(3)).items()}
    save_checkpoint(str(tmp_path / "w.npz"), w)
    out = tmp_path / "digits.py"
    assert main(["export", "torch", str(spec), "--weights", str(tmp_path / "w.npz"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    state = torch.load(tmp_path / "digits.pt", weights_only=True)
    # the checkpoint's arrays one to one, under the checkpoint's names (Keras layouts)
    assert list(state) == list(model.weight_shapes())
    assert all(np.array_equal(state[k].numpy(), w[k]) for k in w)
    text = out.read_text()
    tree = ast.parse(text)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"math", "os", "torch", "torch.nn.functional", "torch"}, imported
    assert "class DigitsConvnet(nn.Module):" in text
    assert "x = self.conv2d_1(x)  # conv2d 32 kernel=3 padding=same activation=relu -> [batch, 8, 8, 32]" in text
    # --state-dict elsewhere: load() finds it there
    other = tmp_path / "weights" / "d.pt"
    assert main(["export", "torch", str(spec), "-o", str(tmp_path / "m2.py"), "--state-dict", str(other)]) == 0
    assert other.exists() and not (tmp_path / "m2.pt").exists()
    assert repr(str(other)) in (tmp_path / "m2.py").read_text() or str(other) in (tmp_path / "m2.py").read_text()


def test_the_reserved_attribute_names_cover_nn_module():
    # a layer named like one of these would shadow (or be shadowed by) nn.Module's own attribute
    reserved = {n for n in dir(torch.nn.Module()) if not n.startswith("_")}
    assert reserved <= torch_export._MODULE_ATTRIBUTES, sorted(reserved - torch_export._MODULE_ATTRIBUTES)


NAMED = "model named\ninput x: float32[3]\nforward: dense 4\neval: dense 3 activation=tanh\nlayer_eval: dense 2\n"


def test_a_layer_named_like_a_module_attribute_gets_a_prefix():
    # (NAMED runs in the clean interpreter with the other cases)
    keys = torch_export.state_dict_keys(nnc.loads(NAMED))
    assert list(keys) == ["layer_forward.kernel", "layer_forward.bias", "layer_eval.kernel", "layer_eval.bias",
                          "layer_eval_.kernel", "layer_eval_.bias"]
    assert list(keys.values()) == list(nnc.loads(NAMED).weight_shapes())


def test_without_torch_nothing_is_written(tmp_path, monkeypatch, capsys):
    spec = next(p for p in SPECS if p.stem == "digits_convnet")
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["export", "torch", str(spec), "-o", str(tmp_path / "m.py")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'nnc[torch]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["-o", "-"], "not standard output"),
    (["-o", "m.py", "--state-dict", "m.py"], "would both be"),
    (["-o", "."], "it is a folder"),
])
def test_refusals(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    spec = next(p for p in SPECS if p.stem == "digits_convnet")
    assert main(["export", "torch", str(spec), *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["export", "keras", str(spec), "--state-dict", "w.pt"]) == 2
