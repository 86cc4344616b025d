"""Conv and ConvTranspose as linear operators: shapes, apply, adjoint and the explicit matrix.

A ConvTranspose with weights W is the matrix `T: (M·Πo) × (C·Πi)` acting on one sample; the
matching Conv is `Tᵀ`. The matrix is built by index arithmetic straight from the scatter
definition (no probing with unit vectors), so it costs O(nnz) time and memory:
`nnz <= C·(M/g)·Πk·Πi`. Batches apply the same matrix to every sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import InputError, UnsupportedError
from .geometry import ConvGeometry, ConvTransposeGeometry, node_geometry
from .ir import Graph, Node
from .ops.conv import conv_reference, conv_transpose_reference


def _spatial_triples(g: ConvTransposeGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (tap, input position, output position) of every scatter that lands inside the output."""
    taps = np.zeros(1, np.int64)
    ins = np.zeros(1, np.int64)
    outs = np.zeros(1, np.int64)
    for k, i, o, s, d, p in zip(
        g.kernel, g.in_spatial, g.out_spatial, g.strides, g.dilations, g.pads_begin, strict=True
    ):
        kappa, pos = np.meshgrid(np.arange(k), np.arange(i), indexing="ij")
        target = s * pos + d * kappa - p
        keep = (target >= 0) & (target < o)
        kappa, pos, target = kappa[keep], pos[keep], target[keep]
        taps = (taps[:, None] * k + kappa[None, :]).reshape(-1)
        ins = (ins[:, None] * i + pos[None, :]).reshape(-1)
        outs = (outs[:, None] * o + target[None, :]).reshape(-1)
    return taps, ins, outs


def _operand(x: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`x` as an array of `shape` or (N, *shape); anything else is one InputError line."""
    try:
        x = np.asarray(x)
    except ValueError as error:  # a ragged nested list
        raise InputError(f"{what}: the operand is not an array ({error})") from None
    if x.dtype.kind not in "biuf":
        raise InputError(f"{what}: the operand has element type {x.dtype.name}, not a number type")
    if tuple(x.shape) != shape and tuple(x.shape[1:]) != shape:
        raise InputError(
            f"{what}: the operand has shape {list(x.shape)}, expected {list(shape)} or [N, *{list(shape)}]"
        )
    return x


@dataclass(frozen=True)
class _LinearConv:
    """Shared by both operators: shapes, batched apply, adjoint through `.T`, the scipy view."""

    geometry: ConvTransposeGeometry | ConvGeometry
    weight: np.ndarray

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, (C, spatial...): `apply` also takes a batch of them."""
        return (self.geometry.in_channels, *self.geometry.in_spatial)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of one output sample, (M, spatial...)."""
        return (self.geometry.out_channels, *self.geometry.out_spatial)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the matrix on flattened samples, as scipy's LinearOperator counts them."""
        return math.prod(self.out_shape), math.prod(self.in_shape)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A x for x of shape in_shape or (N, *in_shape), in float64."""
        x = _operand(x, self.in_shape, "apply")
        batched = x.ndim == len(self.in_shape) + 1
        y = self._forward(x if batched else x[None])
        return y if batched else y[0]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """Aᵀ y, computed by the transposed operator (no matrix is built)."""
        return self.T.apply(y)

    @property
    def T(self) -> _LinearConv:
        """The transposed operator (a Conv for a ConvTranspose and back), same weights, no matrix built."""
        raise NotImplementedError

    def as_linear_operator(self):
        """A scipy.sparse.linalg.LinearOperator on flattened samples."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            self.shape,
            matvec=lambda v: self.apply(np.reshape(v, self.in_shape)).reshape(-1),
            rmatvec=lambda v: self.adjoint(np.reshape(v, self.out_shape)).reshape(-1),
            dtype=np.float64,
        )


@dataclass(frozen=True)
class ConvTransposeOperator(_LinearConv):
    """The linear map x -> ConvTranspose(x; W) on one sample (no bias: the bias is affine, not linear)."""

    geometry: ConvTransposeGeometry

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return conv_transpose_reference(x, self.weight, None, self.geometry)

    @property
    def T(self) -> ConvOperator:
        """The Conv with the same weights, strides, dilations and begin pads."""
        return ConvOperator(self.geometry.adjoint(), self.weight)

    def nnz_bound(self) -> int:
        """Nonzeros the explicit matrix can have at most: one per (input position, tap, output channel)
        pair, before taps that fall into the padding are dropped."""
        g = self.geometry
        return g.in_channels * g.out_channels_per_group * math.prod(g.kernel) * math.prod(g.in_spatial)

    def to_matrix(self, sparse: bool = True, dtype: np.dtype | type = np.float64) -> sp.csr_matrix | np.ndarray:
        """The explicit matrix T (rows: output elements, columns: input elements, C-order)."""
        g = self.geometry
        taps, ins, outs = _spatial_triples(g)
        cg, mg = g.in_channels_per_group, g.out_channels_per_group
        in_channel = np.arange(g.in_channels)
        out_channel = (in_channel // cg)[:, None] * mg + np.arange(mg)[None, :]  # (C, M/g)
        rows = (out_channel[:, :, None] * math.prod(g.out_spatial) + outs[None, None, :]).reshape(-1)
        cols = np.broadcast_to(
            in_channel[:, None, None] * math.prod(g.in_spatial) + ins[None, None, :], (g.in_channels, mg, ins.size)
        ).reshape(-1)
        vals = np.asarray(self.weight, dtype).reshape(g.in_channels, mg, -1)[:, :, taps].reshape(-1)
        matrix = sp.csr_matrix((vals, (rows, cols)), shape=self.shape)
        return matrix if sparse else matrix.toarray()


@dataclass(frozen=True)
class ConvOperator(_LinearConv):
    """The linear map x -> Conv(x; W) on one sample (no bias)."""

    geometry: ConvGeometry

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return conv_reference(x, self.weight, None, self.geometry)

    @property
    def T(self) -> ConvTransposeOperator:
        """The ConvTranspose with the same weights, strides, dilations and begin pads."""
        return ConvTransposeOperator(self.geometry.adjoint(), self.weight)

    def to_matrix(self, sparse: bool = True, dtype: np.dtype | type = np.float64) -> sp.csr_matrix | np.ndarray:
        """The explicit matrix: the transpose of its ConvTranspose's."""
        matrix = self.T.to_matrix(sparse=True, dtype=dtype).T.tocsr()
        return matrix if sparse else matrix.toarray()


def conv_operator(graph: Graph, node: Node) -> ConvTransposeOperator | ConvOperator:
    """The linear operator of a Conv / ConvTranspose node whose weights are constants."""
    if node.op not in ("Conv", "ConvTranspose"):
        raise UnsupportedError(f"{node.label}: only Conv and ConvTranspose nodes are linear operators here")
    weight = graph.constant_value(node.input(1))
    if weight is None:
        raise UnsupportedError(f"{node.label}: weight W is a graph input, not a constant; its matrix is not fixed")
    geometry = node_geometry(node)
    cls = ConvTransposeOperator if node.op == "ConvTranspose" else ConvOperator
    return cls(geometry, np.asarray(weight, np.float64))  # type: ignore[arg-type]
