"""Deconvolutional-network projection: R_l and its transpose R_lᵀ, the latter built by the adjoint pass.

    python examples/deconvnet_projection.py [--layer 2] [--out deconvnet_projection.png]

A small convolution stack (Conv, ReLU, 2x2 max-pooling, twice) runs on a synthetic image and records
its pooling switches. With the switches fixed, the path from layer-l features back to pixels is linear
(Zeiler et al., ICCV 2011; DESIGN.md section 1):

    ŷ = R_l z_l = F_1 U_s1 F_2 U_s2 ... F_l z_l

with F_j a ConvTranspose with the weights of Conv j and U_sj unpooling through the switches
(NearestUpsample, then a mask keeping the switch position). The script builds R_l as a graph,
asks `lowering.adjoint` for R_lᵀ = F_lᵀ ... P_s1 F_1ᵀ (Conv, masked SumPool: the encoder with its
ReLUs removed), prints the dot-product check ⟨R_l z, y⟩ = ⟨z, R_lᵀ y⟩, and saves a figure: the
input, its layer-l features projected back to pixel space (all of them, and the strongest one
alone), and the reconstruction R_l ẑ from features ẑ inferred by FISTA on
min ½‖R_l z − y‖² + λ‖z‖₁, which applies R_l and R_lᵀ through `lowering.as_operator`.
Everything runs in float64 with the reference evaluator in a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lowering
from lowering import Graph, evaluate

SIZE = 48


def synthetic_image() -> np.ndarray:
    """A 48x48 test picture: a disc, a square, a bar and a soft gradient, values in [0, 1]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    image = 0.25 * xx
    image += ((xx - 0.3) ** 2 + (yy - 0.35) ** 2 < 0.03).astype(float) * 0.7
    image += ((np.abs(xx - 0.7) < 0.14) & (np.abs(yy - 0.65) < 0.14)).astype(float) * 0.6
    image += (np.abs(xx + yy - 1.1) < 0.05).astype(float) * 0.5
    return np.clip(image, 0, 1)[None, None]


def filter_bank(size: int = 5) -> np.ndarray:
    """A Gaussian (the smooth part) and eight zero-mean oriented filters (4 orientations x even/odd
    phase), each of unit norm: (9, 1, size, size)."""
    r = np.arange(size) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    filters = [np.exp(-(xx**2 + yy**2) / 2) / np.linalg.norm(np.exp(-(xx**2 + yy**2) / 2))]
    for angle in np.arange(4) * np.pi / 4:
        u = xx * np.cos(angle) + yy * np.sin(angle)
        envelope = np.exp(-(xx**2 + yy**2) / (2 * (size / 3) ** 2))
        for phase in (0.0, np.pi / 2):
            f = envelope * np.cos(2 * np.pi * u / size + phase)
            f -= f.mean()
            filters.append(f / np.linalg.norm(f))
    return np.asarray(filters)[:, None]


def max_pool_switches(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max-pooling of (N, C, H, W) and its switches: a 0/1 mask of the maximum in each window."""
    n, c, height, width = h.shape
    windows = h.reshape(n, c, height // 2, 2, width // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    winner = windows.argmax(axis=1)
    mask = np.zeros_like(windows)
    mask[np.arange(len(winner)), winner] = 1.0
    pooled = windows.max(axis=1).reshape(n, c, height // 2, width // 2)
    mask = mask.reshape(n, c, height // 2, width // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(h.shape)
    return pooled, mask


def conv_relu(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One encoder layer, Conv ('same' padding) then ReLU, run as a graph by the reference evaluator."""
    g = Graph("layer")
    inp = g.add_input("x", x.shape, "float64")
    pad = w.shape[-1] // 2
    g.outputs.append(g.op("Relu", g.op("Conv", inp, g.const(w, "w"), pads=[pad] * 4)))
    return evaluate(g, {"x": x})[g.outputs[0].name]


def reconstruction_operator(weights: list[np.ndarray], switches: list[np.ndarray], layer: int) -> Graph:
    """R_l as a graph: layer-l features -> unpool (switches) -> ConvTranspose ... -> pixels."""
    g = Graph(f"R_{layer}")
    shape = switches[layer - 1].shape
    z = g.add_input(f"z{layer}", (1, weights[layer - 1].shape[0], shape[2] // 2, shape[3] // 2), "float64")
    x = z
    for j in range(layer, 0, -1):
        w = weights[j - 1]
        up = g.op("NearestUpsample", x, scales=[2, 2], name=f"unpool{j}")
        x = g.op("Mul", up, g.const(switches[j - 1], f"switches{j}"), name=f"switch{j}")
        pad = w.shape[-1] // 2
        x = g.op("ConvTranspose", x, g.const(w, f"w{j}"), pads=[pad] * 4, name=f"deconv{j}")
    g.rename(x, "pixels")
    g.outputs.append(x)
    return g


def fista(op, y: np.ndarray, lam: float, iterations: int) -> np.ndarray:
    """Sparse features: min ½‖R z − y‖² + λ‖z‖₁ by FISTA, with R and Rᵀ from the LinearOperator."""
    v = np.random.default_rng(0).standard_normal(op.shape[1])
    for _ in range(30):  # power iteration for the Lipschitz constant ‖R‖²
        v = op.rmatvec(op.matvec(v))
        v /= np.linalg.norm(v)
    step = 1.0 / (1.05 * np.linalg.norm(op.rmatvec(op.matvec(v))))
    z = np.zeros(op.shape[1])
    p, t = z.copy(), 1.0
    for _ in range(iterations):
        g = p - step * op.rmatvec(op.matvec(p) - y)
        z_next = np.sign(g) * np.maximum(np.abs(g) - step * lam, 0.0)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        p = z_next + (t - 1) / t_next * (z_next - z)
        z, t = z_next, t_next
    return z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", type=int, choices=[1, 2], default=2, help="layer l to project from (default 2)")
    parser.add_argument("--out", default="deconvnet_projection.png", help="path of the PNG figure")
    parser.add_argument("--iterations", type=int, default=200, help="FISTA iterations of the reconstruction")
    args = parser.parse_args()
    started = time.perf_counter()

    rng = np.random.default_rng(0)
    weights = [filter_bank(), rng.standard_normal((16, 9, 3, 3)) / np.sqrt(9 * 9)]
    image = synthetic_image()

    # the convnet, forward: record the switches of every pooling layer
    features, switches = image, []
    for w in weights[: args.layer]:
        features, mask = max_pool_switches(conv_relu(features, w))
        switches.append(mask)

    R = reconstruction_operator(weights, switches, args.layer)
    Rt = lowering.adjoint(R)
    print(f"R_{args.layer}:   {R.inputs[0].name} -> " + " -> ".join(n.op for n in R.nodes) + f" -> {R.outputs[0].name}")
    print(
        f"R_{args.layer}^T: {Rt.inputs[0].name} -> " + " -> ".join(n.op for n in Rt.nodes) + f" -> {Rt.outputs[0].name}"
    )

    # the dot-product check: <R z, y> = <z, R^T y> for random z and y
    z = rng.standard_normal(R.inputs[0].shape)
    y = rng.standard_normal(R.outputs[0].shape)
    lhs = np.vdot(evaluate(R, {R.inputs[0].name: z})["pixels"], y)
    back = evaluate(Rt, {Rt.inputs[0].name: y})[Rt.outputs[0].name]
    rhs = np.vdot(z, back)
    gap = abs(lhs - rhs) / (np.linalg.norm(z) * np.linalg.norm(back) + abs(lhs))
    print(f"dot-product check: <R z, y> = {lhs:.12f}, <z, R^T y> = {rhs:.12f}, relative gap {gap:.1e}")

    # features projected back to pixel space: all of them, and the strongest activation alone
    projected = evaluate(R, {R.inputs[0].name: features})["pixels"]
    strongest = np.zeros_like(features)
    top = np.unravel_index(np.argmax(features), features.shape)
    strongest[top] = features[top]
    single = evaluate(R, {R.inputs[0].name: strongest})["pixels"]

    # reconstruction from inferred sparse features (adaptive deconvolutional network inference)
    op = lowering.as_operator(R)
    target = image.reshape(-1)
    lam = 0.002 * np.abs(op.rmatvec(target)).max()
    code = fista(op, target, lam, args.iterations)
    reconstruction = op.matvec(code).reshape(image.shape)
    error = np.linalg.norm(reconstruction - image) / np.linalg.norm(image)
    active = np.count_nonzero(code) / code.size
    print(
        f"reconstruction from layer {args.layer}: relative error {error:.3f} with {active:.0%} of the "
        f"{code.size} features nonzero ({args.iterations} FISTA iterations)"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("input y", image),
        (f"layer-{args.layer} features\nprojected back: R_{args.layer} z", projected),
        (f"strongest feature (channel {top[1]})\nprojected back", single),
        (f"reconstruction R_{args.layer} ẑ\n(relative error {error:.2f})", reconstruction),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for index, (ax, (title, data)) in enumerate(zip(axes, panels, strict=True)):
        picture = data[0, 0]
        if index in (0, len(panels) - 1):  # pixel intensities
            ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
        else:  # projections: signed, centred on zero
            limit = np.abs(picture).max() or 1.0
            ax.imshow(picture, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"Deconvnet projection from layer {args.layer}; R_{args.layer}ᵀ built by lowering.adjoint", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
