"""Tensor-train (MPO) factorization: a Linear layer as a chain of small cores.

The weight ``W`` (``out x in``) is read as a tensor with ``2d`` indices and decomposed by TT-SVD
(`tensorly.decomposition.tensor_train_matrix`) into ``d`` cores, a matrix product operator:

    W[(o1..od), (i1..id)] = G1[1, o1, i1, r1] G2[r1, o2, i2, r2] ... Gd[r(d-1), od, id, 1]

**Reshape rule.** ``out`` and ``in`` are each split into ``d`` factors as equal as possible
(`balanced_factors`); the out factors go largest first and the in factors smallest first, so
that every core carries about the same ``o_k * i_k`` (which makes the largest possible bond
dimensions and the cost of a bond as even as they can be): 1536 x 384 with two cores is
``(48, 32) x (16, 24)``, cores of 768 entries per bond.

**Bond dimensions.** ``fraction`` is the share of the factorized layers' weights kept, over the
whole model, as in `autoshrink.techniques.lowrank`. With two cores (the default) TT-SVD is one
truncated SVD of ``W`` rearranged into an ``(o1 i1) x (o2 i2)`` matrix, so the bond of each
layer is handed out by the low-rank rule itself (`lowrank.allocate_ranks`): one bond at a time
to the layer whose next singular value keeps the largest share of its weight energy per
parameter. With more cores every layer gets one uniform bond, the largest that keeps its own share
under ``fraction``.

**Activation-aware** (``method="activation"``, plan ``rank_method="att"``): the cores and the
bonds follow the layer's output on calibration data instead of its weights alone, as the
activation-aware low rank does (`autoshrink.techniques.lowrank`). A tensor train's input index is
``(i1, ..., id)``, so only a whitening that is a Kronecker product ``L1 x ... x Ld`` keeps the
train's structure: the Gram matrix ``G`` of the layer's inputs (`lowrank.CALIBRATION_SAMPLES` training
inputs, no labels) is approximated by the Kronecker product of its partial traces over each input
factor (``G_k``, each positive semi-definite, ``G_k = L_k L_k^T``), TT-SVD decomposes
``W (L1 x ... x Ld)``, and each core gets ``L_k^-1`` folded back into its input index. The
truncation then minimizes the output error on inputs with that Kronecker-factored Gram matrix, and
with two cores the singular values say what share of the layer's output energy (under it) each
bond keeps; the bonds are handed out from those shares by the same rule. That approximation is
poor where a few input channels carry most of the energy (a transformer's outlier dimensions), so
with two cores the cores are then refitted to the exact Gram matrix by `SWEEPS` sweeps of
alternating least squares (`refit_to_inputs`: each core in turn is the exact minimizer of the
layer's output error on the calibration inputs with the other fixed, so no sweep makes it
worse). On pretrained MiniLM's FFN down-projection of layer 2 at a quarter of its weights (a
development run) this took the output error from 3.3% (whitened TT-SVD) to 0.3%, below the
activation-aware SVD's 0.4% at the same parameters; over whole layer groups it stayed below the
activation-aware SVD at every point measured (``results/tensor-train.md``). A sweep solves systems of ``bond x i_k`` unknowns (seconds to tens of seconds
on a 2-core CPU), so with two cores no whitened layer's bond is allocated past `MAX_REFIT` over its
largest input factor (the budget goes to other layers); with more cores a layer keeps the
whitened TT-SVD. Layers with more than `MAX_WHITENED` inputs keep the weight TT-SVD. The report lists both
(``details["weight_tt"]``, ``details["not_refitted"]``).

**Left dense and reported** (`TechniqueReport.skipped`): a layer whose cores would not be
strictly smaller than it, and one whose chain needs more multiply-adds per input row than
``max_macs`` times the dense layer's (the cores' contraction trades parameters for arithmetic:
a balanced two-core chain at half the parameters of a 1536 x 384 layer costs ~14x its
multiply-adds). That count stands in for "slower"; ``results/tensor-train.md`` measures the
real latency. ``max_macs=None`` turns the check off. The output layer, 1x1 convolutions with
padding, groups or dilation, and convolutions with larger kernels are left whole as well.

The module (`TensorTrainLinear`) contracts the input with one core at a time: reshapes, a
transpose and one ``MatMul`` per core, which ONNX Runtime and OpenVINO run, and which dynamic
int8 quantizes like any other ``MatMul``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autoshrink.techniques import (
    Context,
    Stage,
    count_parameters,
    output_shape,
    register,
)
from autoshrink.techniques.lowrank import (
    MAX_WHITENED,
    _cholesky,
    _energy,
    _Layer,
    _set_submodule,
    allocate_ranks,
    calibration_grams,
    check_pattern,
    factorized,
    weight_layers,
)

MAX_CORES = 4
METHODS = ("weight", "activation")
#: Alternating-least-squares sweeps refitting two cores to the layer's inputs (``method="activation"``).
SWEEPS = 2
#: Largest system (bond x input factor unknowns) a refit solves: ~20 s a sweep at 13824 on 2 cores.
MAX_REFIT = 16384


@dataclass(frozen=True)
class TensorTrainConfig:
    """Replace factorizable layers by tensor trains of ``cores`` cores keeping ``fraction`` of
    their weights.

    Attributes:
        fraction: share of the factorized layers' weights kept, over the whole model, in (0, 1).
        cores: number of cores ``d`` (2 to 4); the weight is read as a tensor of order ``2d``.
        max_macs: a layer whose chain needs more than ``max_macs`` times the dense layer's
            multiply-adds per input row is left dense; ``None`` keeps every layer that is smaller.
        layers: a regular expression; only layers whose module names it finds are considered.
        method: ``"weight"`` (TT-SVD of the weights, bonds by weight energy) or ``"activation"``
            (TT-SVD of the weights whitened by the layer's inputs on calibration data, bonds by
            output energy; see the module docstring).

    Example:
        >>> TensorTrainConfig(fraction=0.5).cores
        2
        >>> TensorTrainConfig(fraction=0.5, cores=7)
        Traceback (most recent call last):
        ...
        ValueError: TensorTrainConfig.cores must be an integer in [2, 4], got 7
    """

    fraction: float
    cores: int = 2
    max_macs: float | None = 1.0
    layers: str | None = None
    method: str = "weight"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TensorTrainConfig.method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.fraction, (int, float)) or not 0.0 < self.fraction < 1.0:
            raise ValueError(f"TensorTrainConfig.fraction must be in (0, 1), got {self.fraction!r}")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or not 2 <= self.cores <= MAX_CORES:
            raise ValueError(f"TensorTrainConfig.cores must be an integer in [2, {MAX_CORES}], got {self.cores!r}")
        if self.max_macs is not None and (not isinstance(self.max_macs, (int, float)) or self.max_macs <= 0):
            raise ValueError(f"TensorTrainConfig.max_macs must be None or a number > 0, got {self.max_macs!r}")
        check_pattern("TensorTrainConfig", self.layers)


@functools.lru_cache(maxsize=1024)
def balanced_factors(n: int, count: int) -> tuple[int, ...]:
    """``count`` factors of ``n``, largest first, as equal as possible (smallest largest factor,
    then largest smallest one).

    Example:
        >>> balanced_factors(1536, 2), balanced_factors(384, 3), balanced_factors(7, 2)
        ((48, 32), (8, 8, 6), (7, 1))
    """
    if count == 1:
        return (n,)
    best = (n,) + (1,) * (count - 1)
    for head in _divisors(n):
        candidate = tuple(sorted((head, *balanced_factors(n // head, count - 1)), reverse=True))
        if (candidate[0], -candidate[-1]) < (best[0], -best[-1]):
            best = candidate
    return best


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0] if n < 1 << 16 else [k for k in (1, n) if n % k == 0]


def tt_shape(out_features: int, in_features: int, cores: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The reshape rule: out factors largest first, in factors smallest first.

    Example:
        >>> tt_shape(1536, 384, 2)
        ((48, 32), (16, 24))
    """
    return balanced_factors(out_features, cores), tuple(reversed(balanced_factors(in_features, cores)))


def _bonds(ranks: Sequence[int], count: int) -> tuple[int, ...]:
    """Bond dimensions ``(1, r1, ..., 1)`` of a chain of ``count`` cores."""
    inner = tuple(ranks)
    if len(inner) != count - 1:
        raise ValueError(f"a chain of {count} cores has {count - 1} inner bonds, got {len(inner)}")
    return (1, *inner, 1)


def max_bonds(out_shape: Sequence[int], in_shape: Sequence[int]) -> tuple[int, ...]:
    """The largest useful inner bonds: beyond them TT-SVD is exact and a bond only adds weights.

    Example:
        >>> max_bonds((48, 32), (16, 24))
        (768,)
    """
    sizes = [o * i for o, i in zip(out_shape, in_shape)]
    return tuple(min(math.prod(sizes[: k + 1]), math.prod(sizes[k + 1 :])) for k in range(len(sizes) - 1))


def tt_parameters(out_shape: Sequence[int], in_shape: Sequence[int], ranks: Sequence[int]) -> int:
    """Entries of the cores (no bias).

    Example:
        >>> tt_parameters((48, 32), (16, 24), [192])
        294912
    """
    r = _bonds(ranks, len(out_shape))
    return sum(r[k] * o * i * r[k + 1] for k, (o, i) in enumerate(zip(out_shape, in_shape)))


def tt_macs(out_shape: Sequence[int], in_shape: Sequence[int], ranks: Sequence[int]) -> int:
    """Multiply-adds per input row of `TensorTrainLinear`'s contraction (last core first).

    Example:
        >>> tt_macs((48, 32), (16, 24), [192]) / (1536 * 384)  # 12x the dense layer's
        12.0
    """
    r = _bonds(ranks, len(out_shape))
    total = 0
    for k in range(len(out_shape)):
        prefix, suffix = math.prod(in_shape[:k]), math.prod(out_shape[k + 1 :])
        total += prefix * suffix * in_shape[k] * r[k + 1] * r[k] * out_shape[k]
    return total


class TensorTrainLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as a chain of cores (see the module docstring).

    Core ``k`` is stored as the matrix ``(i_k r_k) x (r_(k-1) o_k)`` that the contraction
    multiplies by, so each becomes one ``MatMul`` with a constant weight in ONNX.

    Example:
        >>> layer = nn.Linear(12, 6)
        >>> tt = TensorTrainLinear.from_linear(layer, ranks=[8])  # (3, 2) <- (3, 4): bond 8 is exact
        >>> x = torch.randn(3, 12)
        >>> bool(torch.allclose(tt(x), layer(x), atol=1e-5)), tt.ranks
        (True, (8,))
    """

    def __init__(self, out_shape: Sequence[int], in_shape: Sequence[int], ranks: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        if len(out_shape) != len(in_shape) or len(out_shape) < 2:
            raise ValueError(f"out and in shapes need the same number (>= 2) of factors, got {out_shape} and {in_shape}")
        self.out_shape, self.in_shape = tuple(out_shape), tuple(in_shape)
        self.ranks = tuple(int(r) for r in ranks)
        self.in_features, self.out_features = math.prod(self.in_shape), math.prod(self.out_shape)
        r = _bonds(self.ranks, len(self.out_shape))
        self.cores = nn.ParameterList(
            nn.Parameter(torch.zeros(i * r[k + 1], r[k] * o)) for k, (o, i) in enumerate(zip(self.out_shape, self.in_shape))
        )
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None

    @classmethod
    def from_linear(
        cls, layer: nn.Linear, ranks: Sequence[int], shape: tuple[Sequence[int], Sequence[int]] | None = None,
        whitening: Sequence[torch.Tensor] | None = None, gram: torch.Tensor | None = None,
    ) -> TensorTrainLinear:  # fmt: skip
        """TT-SVD of ``layer.weight`` truncated to ``ranks`` (the reshape rule unless ``shape``),
        of the weight whitened by one lower-triangular factor per input factor when ``whitening``
        is given (`kronecker_whitening`), each core's factor folded back after; two cores are then
        refitted to the inputs' Gram matrix ``gram`` when given (`refit_to_inputs`)."""
        out_shape, in_shape = shape or tt_shape(layer.out_features, layer.in_features, len(ranks) + 1)
        if whitening is None:
            cores = tt_svd(layer.weight, out_shape, in_shape, ranks)
        else:
            white = _per_input_factor(layer.weight, out_shape, in_shape, whitening)
            cores = tt_svd(white, out_shape, in_shape, ranks)
            cores = [
                torch.einsum("aojb,ji->aoib", core.double(), torch.linalg.inv(factor.double())).float()
                for core, factor in zip(cores, whitening)
            ]
            if gram is not None and len(cores) == 2:
                cores = refit_to_inputs(cores, layer.weight, gram)
        module = cls(out_shape, in_shape, [c.shape[-1] for c in cores[:-1]], bias=layer.bias is not None)
        module.load_cores(cores)
        if module.bias is not None and layer.bias is not None:
            module.bias.data.copy_(layer.bias.detach())
        return module

    def load_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Set the cores from TT-matrix factors shaped ``(r_(k-1), o_k, i_k, r_k)``."""
        for param, core in zip(self.cores, cores):
            rank_in, o, i, rank_out = core.shape
            param.data.copy_(core.permute(2, 3, 0, 1).reshape(i * rank_out, rank_in * o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        r = _bonds(self.ranks, len(self.out_shape))
        z = x.reshape(-1, self.in_features)  # layout (N, i1..ik, r_k, S) with S the outputs made so far
        suffix = 1
        for k in reversed(range(len(self.out_shape))):
            o, i = self.out_shape[k], self.in_shape[k]
            z = z.reshape(-1, i * r[k + 1], suffix).transpose(1, 2) @ self.cores[k]  # (N i1..i(k-1), S, r_(k-1) o_k)
            z = z.reshape(-1, suffix, r[k], o).permute(0, 2, 3, 1)  # (N i1..i(k-1), r_(k-1), o_k, S)
            suffix *= o
        y = z.reshape(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y

    def dense_weight(self) -> torch.Tensor:
        """The ``out x in`` matrix the chain stands for."""
        with torch.no_grad():
            eye = torch.eye(self.in_features, dtype=self.cores[0].dtype)
            out = self.forward(eye)
            return (out - self.bias if self.bias is not None else out).t()

    def extra_repr(self) -> str:
        return f"out={self.out_shape}, in={self.in_shape}, ranks={self.ranks}, bias={self.bias is not None}"


class PointwiseTensorTrain(nn.Module):
    """A 1x1 convolution (stride ``s``, no padding) as a `TensorTrainLinear` over channels."""

    def __init__(self, linear: TensorTrainLinear, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.linear, self.stride = linear, tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def tt_svd(weight: torch.Tensor, out_shape: Sequence[int], in_shape: Sequence[int], ranks: Sequence[int]) -> list[torch.Tensor]:
    """TT-matrix factors ``(r_(k-1), o_k, i_k, r_k)`` of ``weight`` (``out x in``) by tensorly's
    TT-SVD, bonds truncated to ``ranks`` (capped by what the shape allows).

    Example:
        >>> cores = tt_svd(torch.randn(6, 8), (3, 2), (2, 4), [4])
        >>> [tuple(c.shape) for c in cores]
        [(1, 3, 2, 4), (4, 2, 4, 1)]
    """
    import tensorly as tl
    from tensorly.decomposition import tensor_train_matrix

    tensor = weight.detach().double().cpu().numpy().reshape(*out_shape, *in_shape)
    bonds = [1, *(min(r, m) for r, m in zip(ranks, max_bonds(out_shape, in_shape))), 1]
    with tl.backend_context("numpy"):
        factors = tensor_train_matrix(tensor, rank=bonds).factors
    return [torch.from_numpy(f.copy()).float() for f in factors]


def kronecker_whitening(gram: torch.Tensor, in_shape: Sequence[int]) -> list[torch.Tensor]:
    """Lower Cholesky factors ``L_k`` of the partial traces ``G_k`` of ``gram`` (the layer inputs'
    Gram matrix, index ``(i1..id)``) over each input factor: ``gram ~ G_1 x ... x G_d`` up to scale.

    Example:
        >>> a, b = torch.tensor([[2.0, 1.0], [1.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 9.0]])
        >>> f = kronecker_whitening(torch.kron(a, b).double(), (2, 3))  # exact for a Kronecker product
        >>> g = torch.kron(f[0] @ f[0].T, f[1] @ f[1].T)
        >>> round(float(torch.nn.functional.cosine_similarity(g.flatten(), torch.kron(a, b).double().flatten(), dim=0)), 3)
        1.0
    """
    d = len(in_shape)
    tensor = gram.reshape(*in_shape, *in_shape)
    letters = "abcdefgh"
    factors = []
    for k in range(d):
        rows = "".join(letters[j] if j != k else "x" for j in range(d))
        cols = "".join(letters[j] if j != k else "y" for j in range(d))
        factors.append(_cholesky(torch.einsum(f"{rows}{cols}->xy", tensor)))
    return factors


def refit_to_inputs(
    cores: Sequence[torch.Tensor], weight: torch.Tensor, gram: torch.Tensor, sweeps: int | None = None
) -> list[torch.Tensor]:
    """Two TT-matrix cores refitted by alternating least squares to minimize the layer's output
    error ``tr((W - W') G (W - W')^T)`` on inputs with Gram matrix ``gram`` (damped by `DAMP`).

    ``W'[(o1, o2), (i1, i2)] = sum_r A[o1, i1, r] B[o2, i2, r]`` is linear in ``A`` and in ``B``:
    each half-sweep solves the normal equations of one core with the other fixed (one symmetric
    positive definite system of ``r * i_k`` unknowns, shared by every ``o_k``).

    Example:
        >>> w, x = torch.randn(6, 8), torch.randn(256, 8) * torch.tensor([9.0, 1, 1, 1, 1, 1, 1, 1])
        >>> g = x.T.double() @ x.double() / 256
        >>> first = tt_svd(w, (3, 2), (2, 4), [2])
        >>> refit = refit_to_inputs(first, w, g)
        >>> def error(c): return float(((w - torch.einsum("oar,pbr->opab", c[0][0], c[1][..., 0].permute(1, 2, 0)).reshape(6, 8)) @ x.T).norm())
        >>> error(refit) < error(first)
        True
    """
    from autoshrink.techniques.lowrank import DAMP

    (_, o1, i1, r), (_, o2, i2, _) = cores[0].shape, cores[1].shape
    g = gram.double() + DAMP * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
    g4 = g.reshape(i1, i2, i1, i2)
    wg = (weight.detach().double() @ g).reshape(o1, o2, i1, i2)
    a = cores[0][0].double()  # (o1, i1, r)
    b = cores[1][..., 0].permute(1, 2, 0).double()  # (o2, i2, r)
    for _ in range(SWEEPS if sweeps is None else sweeps):
        h = torch.einsum("rsac,abcd->rbsd", torch.einsum("oar,ocs->rsac", a, a), g4).reshape(r * i2, r * i2)
        b = _spd_solve(h, torch.einsum("oar,opab->prb", a, wg).reshape(o2, r * i2)).reshape(o2, r, i2).permute(0, 2, 1)
        h = torch.einsum("rsbd,abcd->rasc", torch.einsum("pbr,pds->rsbd", b, b), g4).reshape(r * i1, r * i1)
        a = _spd_solve(h, torch.einsum("pbr,opab->ora", b, wg).reshape(o1, r * i1)).reshape(o1, r, i1).permute(0, 2, 1)
    return [a.unsqueeze(0).float(), b.permute(2, 0, 1).unsqueeze(-1).float()]


def _spd_solve(h: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``rhs @ h^-1`` row by row for a symmetric positive (semi-)definite ``h``, ridged if singular."""
    scale = float(h.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for ridge in (1e-10, 1e-6, 1e-3):
        factor, info = torch.linalg.cholesky_ex(h + ridge * scale * eye)
        if int(info) == 0:
            return torch.cholesky_solve(rhs.T, factor).T
    return torch.linalg.lstsq(h, rhs.T).solution.T


def _per_input_factor(
    weight: torch.Tensor, out_shape: Sequence[int], in_shape: Sequence[int], factors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``weight (L1 x ... x Ld)``: each input factor of ``weight`` (``out x in``) multiplied by its matrix."""
    d = len(in_shape)
    tensor = weight.detach().double().reshape(-1, *in_shape)
    for k, factor in enumerate(factors):
        tensor = torch.movedim(torch.tensordot(tensor, factor.double(), dims=([k + 1], [0])), -1, k + 1)
    return tensor.reshape(math.prod(out_shape), math.prod(in_shape)) if d else tensor


def _as_linear(module: nn.Module) -> tuple[nn.Linear | None, str | None]:
    """The Linear layer a module is (a 1x1 convolution's weights as one), or why it is not."""
    if isinstance(module, nn.Linear):
        return module, None
    if isinstance(module, nn.Conv2d):
        if module.kernel_size != (1, 1):
            return None, "convolution with a kernel larger than 1x1: tensor trains here replace Linear and 1x1 layers"
        if module.groups != 1 or module.padding not in ((0, 0), "valid") or module.dilation != (1, 1):
            return None, "1x1 convolution with groups, padding or dilation: not a plain Linear over channels"
        linear = nn.Linear(module.in_channels, module.out_channels, bias=module.bias is not None)
        linear.weight.data = module.weight.detach().flatten(1)
        if module.bias is not None:
            linear.bias = module.bias
        return linear, None
    return None, "not a Linear or Conv2d"


def _rearranged(weight: torch.Tensor, out_shape: Sequence[int], in_shape: Sequence[int]) -> torch.Tensor:
    """``W`` as the ``(o1 i1) x (o2 i2)`` matrix whose truncated SVD is two-core TT-SVD."""
    (o1, o2), (i1, i2) = out_shape, in_shape
    return weight.detach().reshape(o1, o2, i1, i2).permute(0, 2, 1, 3).reshape(o1 * i1, o2 * i2)


def uniform_bond(out_shape: Sequence[int], in_shape: Sequence[int], budget: float) -> int:
    """The largest bond shared by every inner bond (each capped by what the shape allows) whose
    cores fit in ``budget`` entries; 0 when not even bond 1 fits.

    Example:
        >>> uniform_bond((8, 8, 6), (6, 8, 8), 0.5 * 384 * 384)
        33
    """
    limits = max_bonds(out_shape, in_shape)
    bond = 0
    while bond < max(limits):
        ranks = [min(bond + 1, m) for m in limits]
        if tt_parameters(out_shape, in_shape, ranks) > budget:
            break
        bond += 1
    return bond


@dataclass(frozen=True)
class _Plan:
    """One layer's decision: its shape and inner bonds."""

    name: str
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    ranks: tuple[int, ...]
    energy: float | None  # share of the (whitened) weight energy kept (two cores), else None


def plan_bonds(
    layers: list[tuple[str, nn.Linear]], config: TensorTrainConfig, whitening: dict[str, list[torch.Tensor]] | None = None
) -> tuple[list[_Plan], dict[str, str]]:
    """Each layer's TT shape and bonds under ``config.fraction`` over all of ``layers`` (the energy
    of the weights whitened by ``whitening[name]`` where given)."""
    whitening = whitening or {}
    skipped: dict[str, str] = {}
    shapes = {name: tt_shape(lin.out_features, lin.in_features, config.cores) for name, lin in layers}
    plans: list[_Plan] = []
    if config.cores == 2:
        energies: dict[str, torch.Tensor] = {}
        entries: list[_Layer] = []
        for name, lin in layers:
            out_shape, in_shape = shapes[name]
            weight = lin.weight if name not in whitening else _per_input_factor(lin.weight, out_shape, in_shape, whitening[name])
            matrix = _rearranged(weight, out_shape, in_shape)
            # a whitened layer's bond stays where its cores can be refitted (`MAX_REFIT`)
            cap = MAX_REFIT // max(in_shape) if name in whitening else None
            entry = _Layer(name, matrix.shape[0], matrix.shape[1], _energy(matrix), cap)
            if entry.max_rank < 1:
                skipped[name] = "too small: no bond makes the cores smaller than the layer"
                continue
            entries.append(entry)
            energies[name] = entry.energy
        total = sum(e.rows * e.cols for e in entries)
        for name, rank in allocate_ranks(entries, config.fraction * total).items():
            out_shape, in_shape = shapes[name]
            plans.append(_Plan(name, out_shape, in_shape, (rank,), float(energies[name][:rank].sum())))
    else:
        for name, lin in layers:
            out_shape, in_shape = shapes[name]
            bond = uniform_bond(out_shape, in_shape, config.fraction * lin.weight.numel())
            if bond < 1:
                skipped[name] = "too small: no bond makes the cores smaller than the layer"
                continue
            ranks = tuple(min(bond, m) for m in max_bonds(out_shape, in_shape))
            plans.append(_Plan(name, out_shape, in_shape, ranks, None))
    return plans, skipped


def _describe(plan: _Plan, dense: int, whitened: bool) -> str:
    shape = f"{'x'.join(map(str, plan.out_shape))} <- {'x'.join(map(str, plan.in_shape))}"
    energy = "output energy on the calibration inputs" if whitened else "energy"
    kept = f", keeps {100 * plan.energy:.0f}% of its {energy}" if plan.energy is not None else ""
    params = tt_parameters(plan.out_shape, plan.in_shape, plan.ranks)
    macs = tt_macs(plan.out_shape, plan.in_shape, plan.ranks)
    bonds = ",".join(map(str, plan.ranks))
    return f"{plan.name} (TT {shape}, bond {bonds}{kept}, {params / dense:.2f}x weights, {macs / dense:.1f}x multiply-adds)"


@register(TensorTrainConfig)
def tensor_train(stage: Stage, config: TensorTrainConfig, context: Context) -> Stage:
    model = stage.module.eval()
    expected = output_shape(model, context.example_input)
    before = count_parameters(model)
    candidates, skipped = weight_layers(model, context.example_input, config.layers)
    linears: list[tuple[str, nn.Linear]] = []
    modules: dict[str, nn.Module] = {}
    for name, module in candidates:
        linear, reason = _as_linear(module)
        if linear is None:
            skipped[name] = reason or "cannot be factorized"
            continue
        linears.append((name, linear))
        modules[name] = module
    by_name = dict(linears)
    grams, weight_tt = _grams(model, linears, context) if config.method == "activation" else ({}, {})
    whitening = {name: kronecker_whitening(gram, tt_shape(*by_name[name].weight.shape, config.cores)[1]) for name, gram in grams.items()}
    not_refitted: dict[str, str] = {}
    plans, more = plan_bonds(linears, config, whitening)
    skipped.update(more)
    changed: list[str] = []
    for plan in plans:
        dense = by_name[plan.name].weight.numel()
        macs = tt_macs(plan.out_shape, plan.in_shape, plan.ranks)
        if tt_parameters(plan.out_shape, plan.in_shape, plan.ranks) >= dense:
            skipped[plan.name] = "larger than dense at its bond"
            continue
        if config.max_macs is not None and macs > config.max_macs * dense:
            skipped[plan.name] = (
                f"slower than dense: the chain at bond {','.join(map(str, plan.ranks))} needs {macs / dense:.1f}x "
                f"the layer's multiply-adds (limit {config.max_macs:g}x)"
            )
            continue
        module = modules[plan.name]
        gram = grams.get(plan.name)
        if gram is not None and len(plan.ranks) == 1 and plan.ranks[0] * max(plan.in_shape) > MAX_REFIT:
            not_refitted[plan.name] = f"bond {plan.ranks[0]} x input factor {max(plan.in_shape)} over the {MAX_REFIT} unknowns a refit solves"
            gram = None
        tt = TensorTrainLinear.from_linear(by_name[plan.name], plan.ranks, (plan.out_shape, plan.in_shape),
                                         whitening.get(plan.name), gram)  # fmt: skip
        replacement: nn.Module = tt
        if isinstance(module, nn.Conv2d):
            replacement = PointwiseTensorTrain(tt, module.stride)  # type: ignore[arg-type]
        _set_submodule(model, plan.name, replacement)
        changed.append(_describe(plan, dense, plan.name in whitening))
    reasons = sorted({re.sub(r"[\d.]+x", "Nx", r) for r in skipped.values()})
    details = {"fraction": config.fraction, "cores": config.cores, "max_macs": config.max_macs,
               **({"layers": config.layers} if config.layers is not None else {})}  # fmt: skip
    if config.method != "weight":
        details |= {"method": config.method, "weight_tt": weight_tt, "not_refitted": not_refitted}
    return factorized(stage, model, context, expected, before=before, technique="tensor_train",
                      what=f"tensor train at {config.fraction:g}", changed=changed, skipped=skipped,
                      reasons="; ".join(reasons[:3]), details=details)  # fmt: skip


def _grams(
    model: nn.Module, linears: list[tuple[str, nn.Linear]], context: Context
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Each layer's input Gram matrix on `lowrank.CALIBRATION_SAMPLES` training inputs, and the layers left
    to the weight TT-SVD with the reason."""
    weight_tt: dict[str, str] = {}
    names = []
    for name, linear in linears:
        if linear.in_features > MAX_WHITENED:
            weight_tt[name] = f"weight TT-SVD: {linear.in_features} inputs, over the {MAX_WHITENED} an activation-aware one whitens"
        else:
            names.append(name)
    grams, missing = calibration_grams(model, names, context, "weight TT-SVD")
    return grams, weight_tt | missing
