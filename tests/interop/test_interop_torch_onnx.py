"""`nnc import MODEL.onnx` of graphs PyTorch exported (torch.onnx.export, its TorchScript exporter):
the imported spec, with its checkpoint, computes PyTorch's outputs for the same input (images
transposed to channels-last), in the NumPy engine and in onnxruntime on nnc's compiled graph.
Operators nnc has no layer for are reported, with the spec marking their places."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
nn = torch.nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "onnx"))

from onnx_cases import ort_run  # noqa: E402

from nnc.cli import main as nnc  # noqa: E402
from nnc.engines.numpy.network import Network  # noqa: E402
from nnc.lang.checker import check_file  # noqa: E402
from nnc.onnx.export import to_onnx  # noqa: E402


def export(module: nn.Module, x: torch.Tensor, path: Path) -> np.ndarray:
    """Write the module's ONNX graph (batch axis dynamic); return its output for x."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    with torch.no_grad():
        return module(x).numpy()


def imported(path: Path, tmp_path: Path):
    spec, w = tmp_path / "imported.nnspec", tmp_path / "imported.npz"
    assert nnc(["import", str(path), "-o", str(spec), "--weights-out", str(w)]) == 0
    r = check_file(str(spec))
    assert r.ok, [d.message for d in r.diagnostics]
    with np.load(w) as d:
        return r, {k: d[k] for k in d.files}


def assert_same_outputs(r, weights, x_last: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(Network(r.model, weights).predict(x_last), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ort_run(to_onnx(r.model, weights), x_last), expected, rtol=1e-5, atol=1e-5)


class LectureConvnet(nn.Module):
    """The lecture's MNIST convnet: conv 5x5, relu, maxpool, conv, relu, maxpool, flatten, dense,
    relu, dense, softmax (with dropout, the identity in inference)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = self.drop(torch.relu(self.fc1(x)))
        return torch.softmax(self.fc2(x), dim=1)


def test_pytorch_convnet(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    expected = export(LectureConvnet(), x, tmp_path / "convnet.onnx")
    r, w = imported(tmp_path / "convnet.onnx", tmp_path)
    assert [(l.kind, l.options.get("activation")) for l in r.model.layers] == [
        ("conv2d", "relu"), ("maxpool2d", None), ("conv2d", "relu"), ("maxpool2d", None), ("flatten", None),
        ("dense", "relu"), ("dense", "softmax")]
    assert r.model.input.shape == (28, 28, 1)
    # PyTorch's parameters, counted by PyTorch: the same model
    assert r.model.total_params == sum(p.numel() for p in LectureConvnet().parameters())
    assert_same_outputs(r, w, np.transpose(x.numpy(), (0, 2, 3, 1)), expected)


class PaddedConvnet(nn.Module):
    """Padding Keras's `same` gives (3x3, pad 1, stride 1), padding it does not (stride 2, pad 1 on
    an even size: a zeropad2d layer), batch normalization (after the relu: PyTorch's exporter folds
    one that follows a convolution into it), global average pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv1(x)))
        x = torch.tanh(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_pytorch_padded_convnet_with_batchnorm(tmp_path):
    torch.manual_seed(1)
    m = PaddedConvnet()
    with torch.no_grad():  # statistics that are not the initial ones
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 3, 8, 8)
    expected = export(m, x, tmp_path / "padded.onnx")
    r, w = imported(tmp_path / "padded.onnx", tmp_path)
    kinds = [l.kind for l in r.model.layers]
    assert kinds == ["conv2d", "batchnorm", "zeropad2d", "conv2d", "globalavgpool", "dense"], kinds
    assert r.model.layers[0].options["padding"] == "same"
    assert_same_outputs(r, w, np.transpose(x.numpy(), (0, 2, 3, 1)), expected)


class TextLSTM(nn.Module):
    """Embedding, LSTM, dense, sigmoid: the lecture's IMDB model."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(100, 16)
        self.lstm = nn.LSTM(16, 12, batch_first=True)
        self.fc = nn.Linear(12, 1)

    def forward(self, x):
        _, (h, _) = self.lstm(self.embedding(x))
        return torch.sigmoid(self.fc(h[-1]))


def test_pytorch_lstm_text_model(tmp_path):
    torch.manual_seed(2)
    m = TextLSTM()
    with torch.no_grad():  # biases the export must add up (ONNX's Wb + Rb is Keras's one bias)
        for b in (m.lstm.bias_ih_l0, m.lstm.bias_hh_l0):
            b.uniform_(-0.5, 0.5)
    x = torch.randint(0, 100, (5, 20))
    expected = export(m, x, tmp_path / "lstm.onnx")
    r, w = imported(tmp_path / "lstm.onnx", tmp_path)
    assert [l.kind for l in r.model.layers] == ["embedding", "lstm", "dense"]
    assert r.model.input.dtype == "int64" and r.model.input.vocab == 100
    assert r.model.total_params == sum(p.numel() for p in m.parameters()) - 4 * 12  # PyTorch keeps 2 LSTM biases
    assert_same_outputs(r, w, x.numpy(), expected)


class StackedGRU(nn.Module):
    """Two stacked GRU layers (reset_after: PyTorch's formulation), the last step of the sequence."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 10, num_layers=2, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        y, _ = self.gru(x)
        return torch.softmax(self.fc(y[:, -1]), dim=-1)


def test_pytorch_stacked_gru(tmp_path):
    torch.manual_seed(3)
    x = torch.randn(4, 9, 6)
    m = StackedGRU()
    expected = export(m, x, tmp_path / "gru.onnx")
    r, w = imported(tmp_path / "gru.onnx", tmp_path)
    layers = r.model.layers
    assert [l.kind for l in layers] == ["gru", "gru", "dense"]
    assert layers[0].options["return_sequences"] and not layers[1].options["return_sequences"]
    assert all(l.options["reset_after"] for l in layers[:2])
    assert r.model.total_params == sum(p.numel() for p in m.parameters())  # reset_after keeps both biases
    assert_same_outputs(r, w, x.numpy(), expected)


class BidirectionalTagger(nn.Module):
    """A bidirectional LSTM's sequence (both directions concatenated, as Keras's merge=concat), a
    dense on each step (MatMul + Add), a bidirectional GRU's two last states concatenated."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(8, 6)
        self.gru = nn.GRU(6, 3, batch_first=True, bidirectional=True)
        self.tag = nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        _, h = self.gru(torch.tanh(self.proj(y)))
        return self.tag(torch.cat([h[0], h[1]], dim=1))


def test_pytorch_bidirectional_layers(tmp_path):
    torch.manual_seed(4)
    x = torch.randn(3, 7, 5)
    m = BidirectionalTagger()
    expected = export(m, x, tmp_path / "bi.onnx")
    r, w = imported(tmp_path / "bi.onnx", tmp_path)
    lstm, proj, gru, _ = r.model.layers
    assert lstm.options["bidirectional"] and lstm.options["return_sequences"] and lstm.output_shape == (7, 8)
    assert proj.kind == "dense" and proj.options["activation"] == "tanh" and proj.output_shape == (7, 6)
    assert gru.options["bidirectional"] and not gru.options["return_sequences"] and gru.output_shape == (6,)
    assert_same_outputs(r, w, x.numpy(), expected)


class WithHardswish(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(nn.functional.hardswish(self.fc1(x)) * 2.0)


def test_unsupported_operators_are_reported(tmp_path, capsys):
    export(WithHardswish(), torch.randn(2, 4), tmp_path / "hs.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "hs.onnx")).graph.node]
    assert "HardSwish" in ops
    spec = tmp_path / "hs.nnspec"
    assert nnc(["import", str(tmp_path / "hs.onnx"), "-o", str(spec), "--weights-out", str(tmp_path / "w.npz")]) == 1
    err = capsys.readouterr().err
    assert "HardSwish" in err and "Mul" in err and "Traceback" not in err
    text = spec.read_text()
    assert "# unsupported:" in text and "HardSwish" in text
    assert "fc1: dense 8" in text.replace("  ", " ")
    assert not (tmp_path / "w.npz").exists()
