"""`lowering.from_torch`: PyTorch modules through `torch.export` into the IR.

The oracle is PyTorch itself: the module run in float64 (a float64 copy of its parameters on the
float64 input), against which the graph is evaluated by `lowering.evaluate` (float64 from the op
definitions) and, lowered, on every backend.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import lowering  # noqa: E402
from lowering import UnsupportedError, evaluate, from_onnx, lower, to_onnx  # noqa: E402


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip()


def randomize_batchnorm(module: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator))
                m.running_var.copy_(0.3 + torch.rand(n, generator=generator))
                if m.affine:
                    m.weight.copy_(1 + 0.5 * torch.randn(n, generator=generator))
                    m.bias.copy_(torch.randn(n, generator=generator))
    return module


def inputs_for(*shapes: tuple[int, ...], seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*s, generator=generator) for s in shapes)


def torch_reference(module: nn.Module, inputs: tuple) -> np.ndarray:
    """The module in float64 (eval mode), on the float64 version of the inputs."""
    reference = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        return reference(*(t.double() for t in inputs)).numpy()


def feeds(graph: lowering.Graph, inputs: tuple) -> dict[str, np.ndarray]:
    return {v.name: t.numpy() for v, t in zip(graph.inputs, inputs, strict=True)}


def check_module(module: nn.Module, *shapes: tuple[int, ...], rtol: float = 1e-9) -> lowering.Graph:
    torch.manual_seed(0)
    inputs = inputs_for(*shapes)
    graph = lowering.from_torch(module, inputs)
    want = torch_reference(module, inputs)
    (got,) = evaluate(graph, feeds(graph, inputs)).values()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))
    return graph


class Call(nn.Module):
    """Wrap a layer to call it with extra arguments (e.g. ConvTranspose's output_size=)."""

    def __init__(self, layer: nn.Module, **kwargs) -> None:
        super().__init__()
        self.layer, self.kwargs = layer, kwargs

    def forward(self, x):
        return self.layer(x, **self.kwargs)


# ----------------------------------------------------------------- convolutions

CONV_TRANSPOSE_CASES = [
    # (module, input shape)
    (nn.ConvTranspose1d(4, 6, 5, stride=3, padding=2, output_padding=1), (2, 4, 7)),
    (nn.ConvTranspose1d(4, 6, 16, stride=8, padding=4, groups=2, bias=False), (1, 4, 5)),
    (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, dilation=2), (2, 4, 5, 4)),
    (nn.ConvTranspose2d(6, 6, (3, 2), stride=(2, 3), padding=(1, 0), groups=3), (1, 6, 4, 5)),
    (nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1), (1, 4, 3, 3)),
    (nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1, output_padding=(1, 0, 1)), (1, 4, 3, 4, 3)),
    (nn.ConvTranspose3d(4, 4, 2, stride=2, groups=4, dilation=(1, 2, 1)), (2, 4, 2, 3, 2)),
]


CONV_TRANSPOSE_IDS = [
    "1d-op",
    "1d-groups-k16-s8",
    "2d-dilated",
    "2d-depthwise-asym",
    "2d-k4s2p1",
    "3d-op",
    "3d-grouped",
]


@pytest.mark.parametrize(("module", "shape"), CONV_TRANSPOSE_CASES, ids=CONV_TRANSPOSE_IDS)
def test_conv_transpose(module, shape):
    graph = check_module(module, shape)
    (node,) = graph.nodes
    assert node.op == "ConvTranspose" and node.inputs[1].is_initializer


@pytest.mark.parametrize(
    ("layer", "shape", "output_size"),
    [
        (nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1), (1, 3, 5), [10]),
        (nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), (2, 3, 4, 5), [8, 10]),
        (nn.ConvTranspose2d(3, 2, 3, stride=3), (1, 3, 4, 4), (13, 14)),
        (nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1), (1, 2, 3, 3, 2), [6, 5, 4]),
    ],
)
def test_conv_transpose_with_output_size_at_call_time(layer, shape, output_size):
    graph = check_module(Call(layer, output_size=output_size), shape)
    assert list(graph.outputs[0].shape[2:]) == list(output_size)


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 9)),
        (nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), (1, 4, 6, 7)),
        (nn.Conv2d(4, 4, 2, padding="valid", bias=False), (1, 4, 5, 5)),
        (nn.Conv3d(2, 4, 3, stride=(1, 2, 1), padding=(0, 1, 1)), (1, 2, 4, 5, 4)),
    ],
    ids=["conv1d", "conv2d-same", "conv2d-valid", "conv3d"],
)
def test_conv(module, shape):
    graph = check_module(module, shape)
    assert [n.op for n in graph.nodes] == ["Conv"]


# ----------------------------------------------------------------- BatchNorm, activations, cat, pixel_shuffle, skips


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Sequential(nn.ConvTranspose1d(3, 4, 4, 2, 1), nn.BatchNorm1d(4)), (2, 3, 5)),
        (nn.Sequential(nn.ConvTranspose2d(3, 4, 4, 2, 1), nn.BatchNorm2d(4)), (2, 3, 4, 4)),
        (nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4, affine=False, eps=1e-3)), (1, 3, 4, 4, 4)),
    ],
    ids=["1d", "2d", "3d-no-affine"],
)
def test_batchnorm_uses_running_statistics(module, shape):
    randomize_batchnorm(module)
    module.train()  # traced in eval mode whatever the caller's mode, which is restored afterwards
    graph = check_module(module, shape)
    assert module.training and all(m.training for m in module.modules())
    assert "BatchNormalization" in [n.op for n in graph.nodes]


ACTIVATIONS = {
    "relu": (nn.ReLU(), "Relu"),
    "leaky_relu": (nn.LeakyReLU(0.2), "LeakyRelu"),
    "tanh": (nn.Tanh(), "Tanh"),
    "sigmoid": (nn.Sigmoid(), "Sigmoid"),
    "silu": (nn.SiLU(), "Sigmoid"),
    "relu6": (nn.ReLU6(), "Clip"),
    "hardtanh": (nn.Hardtanh(-0.5, 0.25), "Clip"),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations(name):
    activation, op = ACTIVATIONS[name]
    module = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2), activation)
    graph = check_module(module, (2, 2, 3, 3))
    assert op in [n.op for n in graph.nodes]


class SkipDecoder(nn.Module):
    """cat with an encoder feature (negative dim), pixel_shuffle, an additive skip, scalar arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x, skip, fine):
        y = torch.cat([self.up(x), skip], dim=-3)
        z = F.pixel_shuffle(self.conv(y), 2)
        return torch.relu(z + fine) * 2.0 - 0.5


class Interpolating(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)

    def forward(self, x):
        return self.up(x) + F.interpolate(x, scale_factor=2.0)


def test_cat_pixel_shuffle_and_skip_additions():
    graph = check_module(SkipDecoder(), (2, 8, 3, 3), (2, 4, 6, 6), (2, 4, 12, 12))
    ops = [n.op for n in graph.nodes]
    for op in ("ConvTranspose", "Concat", "Conv", "DepthToSpace", "Add", "Relu", "Mul", "Sub"):
        assert op in ops, op
    assert graph.nodes_of("DepthToSpace")[0].attr("mode") == "CRD"
    assert graph.nodes_of("Concat")[0].attr("axis") == 1


def test_unsupported_ops_are_refused_in_one_line_naming_them():
    with pytest.raises(UnsupportedError) as info:
        lowering.from_torch(Interpolating(), inputs_for((1, 4, 3, 3)))
    message = str(info.value)
    assert one_line(message) and "upsample_nearest2d" in message and "Interpolating" in message

    class Two(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1) + torch.erf(x)

    with pytest.raises(UnsupportedError) as info:
        lowering.from_torch(Two(), inputs_for((2, 3)))
    message = str(info.value)
    assert one_line(message) and "softmax" in message and "erf" in message


def test_lazy_public_name():
    from lowering.frontends.torch import from_torch

    assert lowering.from_torch is from_torch


# ----------------------------------------------------------------- lowered, on every backend; dynamic batch


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(8, 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(4, 3, 3, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z)


@pytest.fixture(scope="module")
def generator_graph():
    torch.manual_seed(1)
    module = randomize_batchnorm(Generator())
    batch = torch.export.Dim("batch", min=1, max=64)
    graph = lowering.from_torch(module, inputs_for((2, 8, 1, 1)), dynamic_shapes=({0: batch},))
    return module, graph


@pytest.mark.parametrize("strategy", lowering.api.strategy_names())
def test_lowered_generator_matches_pytorch_on_every_backend(generator_graph, strategy):
    module, graph = generator_graph
    lowered = lower(graph, strategy)
    assert not lowered.nodes_of("ConvTranspose")
    inputs = inputs_for((3, 8, 1, 1), seed=5)  # another batch than the traced one
    want = torch_reference(module, inputs)
    for backend in ("numpy", "torch", "onnx"):
        (got,) = lowering.compile(lowered, backend)(feeds(lowered, inputs)).values()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=backend)


def test_symbolic_batch_survives_lowering_and_export(generator_graph):
    _, graph = generator_graph
    batch = graph.inputs[0].shape[0]
    assert isinstance(batch, str)
    assert graph.outputs[0].shape == (batch, 3, 15, 15)
    model = to_onnx(lower(graph, "auto"))
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [batch, 3, 15, 15]
    assert from_onnx(model).inputs[0].shape == (batch, 8, 1, 1)
