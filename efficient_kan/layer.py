"""``KANLinear``, a drop-in for ``nn.Linear``, and the ``KAN`` container.

The layer computes, for every output ``o``::

    y[..., o] = sum_i base_weight[o, i] * act(x[..., i])
              + sum_i sum_j B_j(x[..., i]) * spline_weight[o, i, j] * spline_scaler[o, i]
              + bias[o]

with ``B_j`` the B-splines of order ``spline_order`` over the per-feature knots ``grid[i]``
(see :mod:`efficient_kan.bspline`). Parameters, buffer, initialisation and state-dict keys are
those of the widely used efficient-kan formulation (plus an optional ``bias``), so its checkpoints
load. The module validates input and holds state; the maths is one call to
:func:`efficient_kan.functional.kan_linear`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from .activations import spec_of_module
from .bspline import bspline_basis, check_grid, uniform_grid
from .functional import BACKENDS, kan_linear

__all__ = ["KANLinear", "KAN", "knot_dtype"]

# What knot_dtype returns for every floating dtype; the forward checks against this set, cheaply.
_KNOT_DTYPES = frozenset({torch.float32, torch.float64})


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def knot_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a layer of parameter dtype ``dtype`` keeps its knots in.

    ``dtype`` itself when it is a floating-point type at least as precise as float32 (float32,
    float64), float32 otherwise (bfloat16, float16, ...). Knots are positions, not weights: in
    bfloat16 knots 0.02 apart near 3 round onto each other (its spacing there is 0.0156), so the
    grid would stop being strictly increasing. The forward's knot arithmetic runs in at least
    float32 on both paths already, so float32 knots change no arithmetic there.
    """
    if dtype.is_floating_point and torch.finfo(dtype).eps <= torch.finfo(torch.float32).eps:
        return dtype
    return torch.float32


# update_grid forms the old splines' values (in, rows, out) directly up to this many elements
# (512 MiB in float64), and goes through the small Gram products beyond.
_REFIT_VALUES_MAX_ELEMENTS = 1 << 26


def _fit_spline_coefficients(
    bases: torch.Tensor, values: torch.Tensor | None = None, *, rhs: torch.Tensor | None = None
) -> torch.Tensor:
    """Least-squares coefficients ``c`` with ``bases @ c ~= values``, independently per feature.

    ``bases (I, N, C)``, ``values (I, N, O)`` -> ``(I, C, O)``, in float64; or, instead of
    ``values``, ``rhs = bases^T @ values (I, C, O)`` already formed. The minimum-norm
    solution: bases that no sample touches get coefficient 0 (underdetermined or rank-deficient
    systems are normal here: the initial fit has ``G + 1`` points for ``G + K`` bases, and a grid
    update may leave a basis without samples). Through the pseudo-inverse of the small Gram
    matrices, because ``torch.linalg.lstsq`` on CUDA needs full rank.
    """
    bases = bases.double()
    gram = bases.transpose(1, 2) @ bases
    if rhs is None:
        rhs = bases.transpose(1, 2) @ values.double()
    return torch.linalg.pinv(gram, hermitian=True, rtol=1e-13) @ rhs


def _knots_at(grid: torch.Tensor, index: torch.Tensor, spline_order: int) -> torch.Tensor:
    """Positions at fractional knot indices, linear between knots, per feature: ``(I, len(index))``.

    ``grid (I, G + 2K + 1)`` holds the knots of indices ``-K .. G + K``; ``index`` lies in that range.
    """
    pos = index + spline_order
    left = pos.floor().long().clamp(0, grid.shape[1] - 2)
    frac = (pos - left).to(grid.dtype)
    lo, hi = grid[:, left], grid[:, left + 1]
    return lo + frac * (hi - lo)


class KANLinear(nn.Module):
    """A Kolmogorov-Arnold layer with B-spline edge functions; input ``(*, in_features)``.

    Args:
        in_features, out_features: sizes, as for ``nn.Linear``.
        bias: add a learnable ``bias (out_features,)`` like ``nn.Linear`` (efficient-kan had none;
            use ``bias=False`` to load its checkpoints).
        grid_size: number of grid intervals ``G`` on ``grid_range`` (this and the options after it
            are keyword-only).
        spline_order: B-spline order ``K`` (3 = cubic); each feature has ``G + K`` bases.
        grid_range: initial knot range ``(lo, hi)``, ``lo < hi``.
        scale_noise: size of the random initial spline coefficients.
        scale_base: gain of the base weight's Kaiming-uniform initialisation.
        scale_spline: gain of the spline scaler's initialisation (or a fixed factor without it).
        enable_standalone_scale_spline: learn a per-edge ``spline_scaler (out, in)``.
        base_activation: an ``nn.Module`` class (instantiated) or instance; ``nn.SiLU`` and
            ``nn.Identity`` run fused on the Triton path, others run in PyTorch.
        grid_eps: in ``update_grid``, the weight of the uniform knots against the adaptive ones.
        device, dtype: factory arguments, 4th and 5th positional as for ``nn.Linear``. On the
            ``meta`` device nothing is initialised; ``to_empty(device=...)`` then
            ``reset_parameters()`` initialises (the pattern large models use).

    Attributes:
        backend: ``"auto"`` (Triton on CUDA, PyTorch elsewhere), ``"triton"`` or ``"torch"``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        enable_standalone_scale_spline: bool = True,
        base_activation: type[nn.Module] | nn.Module = nn.SiLU,
        grid_eps: float = 0.02,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.grid_size = _check_positive_int("grid_size", grid_size)
        self.spline_order = _check_positive_int("spline_order", spline_order, minimum=0)
        if len(grid_range) != 2 or not all(math.isfinite(float(v)) for v in grid_range):
            raise ValueError(f"grid_range must be two finite numbers (lo, hi), got {grid_range!r}")
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if not lo < hi:
            raise ValueError(f"grid_range must be increasing (lo < hi), got {grid_range!r}")
        self.grid_range = (lo, hi)
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"grid_eps must lie in [0, 1], got {grid_eps!r}")
        if scale_noise < 0:
            raise ValueError(f"scale_noise must be >= 0, got {scale_noise!r}")
        self.scale_noise = float(scale_noise)
        self.scale_base = float(scale_base)
        self.scale_spline = float(scale_spline)
        self.enable_standalone_scale_spline = bool(enable_standalone_scale_spline)
        self.grid_eps = float(grid_eps)
        if isinstance(base_activation, type) and issubclass(base_activation, nn.Module):
            base_activation = base_activation()
        if not isinstance(base_activation, nn.Module):
            raise TypeError(
                "base_activation must be an nn.Module class (e.g. nn.SiLU) or instance, "
                f"got {base_activation!r}"
            )
        self.base_activation = base_activation
        self.backend = "auto"

        factory = {"device": device, "dtype": dtype}
        n_bases = self.grid_size + self.spline_order
        # The knots stay in at least float32 whatever the parameters' dtype (see knot_dtype);
        # reset_parameters fills them in.
        self.register_buffer(
            "grid",
            torch.empty(
                self.in_features,
                n_bases + self.spline_order + 1,
                device=device,
                dtype=knot_dtype(dtype or torch.get_default_dtype()),
            ),
        )
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, n_bases, **factory))
        if self.enable_standalone_scale_spline:
            self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features, **factory))
        else:
            self.register_parameter("spline_scaler", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    # ------------------------------------------------------------------ initialisation
    def reset_parameters(self) -> None:
        """Re-initialise like efficient-kan (and ``bias`` like ``nn.Linear``); resets the grid.

        Raises ``ValueError`` (and changes nothing) if ``grid_range`` is too narrow for its knots
        to be strictly increasing in the default dtype (float32 unless changed). Works on the
        ``meta`` device too, so a layer built there can be materialised with ``to_empty`` and then
        reset.
        """
        # The knots are computed on the CPU, so that they can be checked before anything changes
        # and the fit below needs no copy back from the device; in the default dtype (at least
        # float32), as efficient-kan's are, so that a seed gives the same layer as before in
        # every layer dtype (a float64 layer gets float32-rounded knots, as a cast one would).
        default = knot_dtype(torch.get_default_dtype())
        grid_cpu = uniform_grid(
            self.in_features, self.grid_size, self.spline_order, self.grid_range, device="cpu", dtype=default
        ).to(self.grid.dtype)
        try:
            check_grid(grid_cpu)
        except ValueError as err:
            raise ValueError(
                f"grid_range {self.grid_range} with grid_size {self.grid_size} gives knots that are "
                f"not strictly increasing in {default} ({err}); use a wider grid_range"
            ) from None
        grid_cpu = grid_cpu.double()
        with torch.no_grad():
            self.grid.copy_(grid_cpu)
            nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
            # Small random curves sampled on the grid points, fitted by the splines. Drawn on the
            # CPU, as efficient-kan does, so a seed gives the same layer on every device.
            noise = (
                (torch.rand(self.grid_size + 1, self.in_features, self.out_features, device="cpu") - 0.5)
                * self.scale_noise
                / self.grid_size
            )
            points = grid_cpu.t()[self.spline_order : self.spline_order + self.grid_size + 1]  # (G+1, I)
            coeff = _fit_spline_coefficients(
                rearrange(bspline_basis(points, grid_cpu, self.spline_order), "n i c -> i n c"),
                rearrange(noise.double(), "n i o -> i n o"),
            )
            if not self.enable_standalone_scale_spline:
                coeff = coeff * self.scale_spline
            self.spline_weight.copy_(rearrange(coeff, "i c o -> o i c"))
            if self.spline_scaler is not None:
                nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, init: str = "kan", **kwargs) -> KANLinear:
        """A ``KANLinear`` with ``linear``'s sizes, bias presence, device and dtype.

        ``init="kan"`` (default): a fresh KAN initialisation. ``init="linear"``: the new layer
        computes exactly what ``linear`` computed (identity base branch carrying its weight and
        bias, zero splines), so a pretrained model keeps its accuracy and then learns splines.
        Other keyword arguments go to the constructor.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        if init not in ("kan", "linear"):
            raise ValueError(f"init must be 'kan' or 'linear', got {init!r}")
        kwargs.setdefault("device", linear.weight.device)
        kwargs.setdefault("dtype", linear.weight.dtype)
        if init == "linear":
            act = kwargs.setdefault("base_activation", nn.Identity)
            if not (act is nn.Identity or isinstance(act, nn.Identity)):
                raise ValueError(
                    "init='linear' needs base_activation=nn.Identity to reproduce the linear map"
                )
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
        if init == "linear":
            with torch.no_grad():
                layer.base_weight.copy_(linear.weight)
                layer.spline_weight.zero_()
                if linear.bias is not None:
                    layer.bias.copy_(linear.bias)
        return layer

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid.dtype not in _KNOT_DTYPES:
            # Only a direct assignment gets here (casts and loads keep the knots in float32+).
            raise TypeError(
                f"KANLinear's grid is {self.grid.dtype}; knots must be float32 or float64 "
                "(bfloat16/float16 knots can merge): assign grid.float() instead"
            )
        return kan_linear(
            x,
            self.grid,
            self.base_weight,
            self.spline_weight,
            self.spline_scaler,
            self.bias,
            spline_order=self.spline_order,
            base_activation=spec_of_module(self.base_activation),
            backend=self._backend,
        )

    # ------------------------------------------------------------------ grid update
    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        """Move the knots to the distribution of ``x`` and refit the splines to the old ones.

        Knots: per feature, ``grid_eps`` times a uniform grid on ``[min - margin, max + margin]``
        plus ``1 - grid_eps`` times the sample quantiles, extended by ``spline_order`` uniform
        steps each side (efficient-kan's rule). Then ``spline_weight`` is refitted: each edge's
        spline on the new knots is the least-squares fit of its old spline at the samples ``x``.
        That is what is kept, and only up to the fit's residual, because a spline on the old knots
        is in general not a spline on the new ones (a cubic polynomial is kept exactly). Measured
        on ``KAN([784, 64, 10])`` with 512 digits of the bundled MNIST subset, ``model(x,
        update_grid=True)`` moved the logits by up to 1.8e-3 at initialisation (logits up to 0.6)
        and 9.0e-3 after one epoch of training (logits up to 12.2), the same in float32 and float64.
        Unlike efficient-kan, the fit is of the unscaled splines, so ``spline_scaler`` is not
        applied twice.

        Raises ``ValueError`` (and changes nothing) if ``x`` has non-finite values, fewer than two
        rows, or gives knots that are not strictly increasing once stored in the grid's dtype
        (possible with ``grid_eps=0``, or with samples spread less than float32 resolves).
        """
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"update_grid expected input of shape (*, {self.in_features}), got {tuple(x.shape)}"
            )
        x = x.detach().reshape(-1, self.in_features)
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"update_grid needs at least 2 samples, got {n}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("update_grid got non-finite input values; the grid was left unchanged")
        xd = x.double()
        old_grid = self.grid.double()
        k, g = self.spline_order, self.grid_size

        # The function to keep: each edge's unscaled spline on the samples, B_old @ W.
        old_bases = rearrange(bspline_basis(xd, old_grid, k), "n i c -> i n c")

        x_sorted = torch.sort(xd, dim=0).values
        idx = torch.linspace(0, n - 1, g + 1, dtype=torch.int64, device=x.device)
        grid_adaptive = x_sorted[idx]
        uniform_step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / g
        steps = torch.arange(g + 1, dtype=torch.float64, device=x.device).unsqueeze(1)
        grid_uniform = steps * uniform_step + x_sorted[0] - margin
        interior = self.grid_eps * grid_uniform + (1 - self.grid_eps) * grid_adaptive
        ext = torch.arange(1, k + 1, dtype=torch.float64, device=x.device).unsqueeze(1)
        new_grid = (
            torch.cat(
                [interior[:1] - uniform_step * ext.flip(0), interior, interior[-1:] + uniform_step * ext],
                dim=0,
            )
            .t()
            .contiguous()
        )  # (I, G + 2K + 1)
        # Checked and fitted as stored (data spread over less than the dtype's spacing).
        new_grid = self._as_stored_grid(new_grid, "update_grid")

        new_bases = rearrange(bspline_basis(xd, new_grid.double(), k), "n i c -> i n c")
        old_weight = rearrange(self.spline_weight.double(), "o i c -> i c o")
        if self.in_features * n * self.out_features <= _REFIT_VALUES_MAX_ELEMENTS:
            coeff = _fit_spline_coefficients(new_bases, old_bases @ old_weight)
        else:
            # The values B_old W are (in, rows, out): too large here, so the normal equations'
            # right side B_new^T (B_old W) is formed as (B_new^T B_old) W instead. The same least
            # squares, rounded differently, which is why small problems keep the direct form:
            # training runs that update grids follow their rounding closely.
            rhs = (new_bases.transpose(1, 2) @ old_bases) @ old_weight
            coeff = _fit_spline_coefficients(new_bases, rhs=rhs)
        if not bool(torch.isfinite(coeff).all()):
            raise ValueError("update_grid's refit was not finite; the layer was left unchanged")
        self.grid.copy_(new_grid)
        self.spline_weight.copy_(rearrange(coeff, "i c o -> o i c"))

    def _as_stored_grid(self, new_grid: torch.Tensor, method: str) -> torch.Tensor:
        """``new_grid`` in the grid's dtype, checked there: rounding can merge knots that are
        distinct in float64. An invalid one raises, naming ``method``, before anything changed."""
        new_grid = new_grid.to(self.grid.dtype)
        try:
            check_grid(new_grid)
        except ValueError as err:
            raise ValueError(
                f"{method} would make an invalid grid in {self.grid.dtype} ({err}); the layer was left unchanged"
            ) from None
        return new_grid

    # ------------------------------------------------------------------ knots under casts and loads
    def _apply(self, fn, recurse: bool = True):
        """``nn.Module._apply`` (behind ``.to``, ``.half``, ``.cuda``, ``to_empty``, ...), except that
        the knots never drop below float32 (see :func:`knot_dtype`): a cast to a lower precision
        moves them to the new device as float32. A cast that would merge knots (float64 ones
        closer than float32 resolves, under ``.float()``) raises ``ValueError`` before anything
        changes."""
        grid = self._buffers.get("grid")
        if grid is None:
            return super()._apply(fn, recurse)
        new_grid = fn(grid)
        if new_grid.dtype != knot_dtype(new_grid.dtype):
            new_grid = grid.to(device=new_grid.device, dtype=knot_dtype(new_grid.dtype))
        if (
            new_grid.dtype != grid.dtype
            and torch.finfo(new_grid.dtype).eps > torch.finfo(grid.dtype).eps
            and not (grid.is_meta or new_grid.is_meta)
        ):
            try:
                check_grid(new_grid)
            except ValueError as err:
                raise ValueError(
                    f"casting the knots from {grid.dtype} to {new_grid.dtype} would make an invalid "
                    f"grid ({err}); the module was left unchanged"
                ) from None
        return super()._apply(lambda t: new_grid if t is grid else fn(t), recurse)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        """Load as ``nn.Module`` does, with the knots checked first: a grid whose knots are not
        finite and strictly increasing in the dtype they will be stored in (this layer's grid
        dtype; with ``assign=True``, the checkpoint's, raised to float32 if lower) is reported as
        an error and nothing of this layer is loaded. A bfloat16/float16 grid from a checkpoint is
        stored in at least float32 either way."""
        key = prefix + "grid"
        incoming = state_dict.get(key)
        if isinstance(incoming, torch.Tensor) and tuple(incoming.shape) == tuple(self.grid.shape):
            assign = bool(local_metadata.get("assign_to_params_buffers", False))
            stored_dtype = knot_dtype(incoming.dtype) if assign else self.grid.dtype
            if not incoming.is_meta:
                try:
                    check_grid(incoming.detach().to(stored_dtype))
                except ValueError as err:
                    error_msgs.append(
                        f"{key}: {err} (as {stored_dtype}); nothing of this KANLinear was loaded"
                    )
                    return
            if assign and incoming.dtype != stored_dtype:
                # state_dict is load_state_dict's own copy of the mapping; the caller's is untouched.
                state_dict[key] = incoming.to(stored_dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ------------------------------------------------------------------ grid extension
    @torch.no_grad()
    def refine(self, grid_size: int) -> None:
        """Grid extension (KAN paper, section 2.5): re-express the splines on ``grid_size`` intervals.

        Every edge's spline is refitted by least squares on the new knots so the layer computes the
        same function: a finer grid starts where the coarse one left off and can then be trained
        further, which is how KANs reach lower losses with more grid points. The new interior knots
        follow the current ones (placed by knot index, so an adaptive grid from ``update_grid``
        keeps its density) and the ``spline_order`` outer knots on each side are kept. When
        ``grid_size`` is a multiple of the current one every old knot stays a knot and the function
        is kept exactly (up to rounding), inside the grid range and beyond it. Otherwise, and when
        coarsening, it is the closest spline in the least-squares sense on points spread over the
        knots, several per old and per new interval.

        ``grid``, ``spline_weight`` and ``grid_size`` are replaced (``spline_weight`` by a new
        ``nn.Parameter`` of the new shape, with the same ``requires_grad``): build optimizers after
        refining. ``base_weight``, ``spline_scaler`` and ``bias`` are unchanged.
        """
        new_g = _check_positive_int("grid_size", grid_size)
        k, g = self.spline_order, self.grid_size
        old_grid = self.grid.double()
        device = old_grid.device
        n_knots = old_grid.shape[1]
        # Interior knots at index steps g / new_g along the old ones (linear between knots): on a
        # uniform grid, the uniform grid of new_g intervals. The outer knots stay, so that for a
        # multiple of g the old knot vector is contained in the new one.
        interior = _knots_at(
            old_grid, torch.arange(new_g + 1, dtype=torch.float64, device=device) * (g / new_g), k
        )
        new_grid = torch.cat([old_grid[:, :k], interior, old_grid[:, n_knots - k :]], dim=1)
        # Checked and fitted as stored: in float32 a very fine grid's knots could merge.
        new_grid = self._as_stored_grid(new_grid, "refine")
        new_grid = new_grid.double()
        # Fit points spread by knot index over the whole knot span, at least 4 per old and new interval.
        step = min(1.0, g / new_g) / 4
        n_points = math.ceil((g + 2 * k) / step) + 1
        sample_index = torch.linspace(-k, g + k, n_points, dtype=torch.float64, device=device)
        weight = rearrange(self.spline_weight.double(), "o i c -> i c o")
        coeff = torch.empty(
            self.in_features, new_g + k, self.out_features, dtype=torch.float64, device=device
        )
        # In slices of features, so no (features, points, bases) tensor exceeds ~2^22 elements.
        chunk = max(1, (1 << 22) // (n_points * (new_g + g + 2 * k + self.out_features)))
        for lo in range(0, self.in_features, chunk):
            feats = slice(lo, lo + chunk)
            points = _knots_at(old_grid[feats], sample_index, k).t()  # (N, Ic)
            old_values = (
                rearrange(bspline_basis(points, old_grid[feats], k), "n i c -> i n c") @ weight[feats]
            )
            new_bases = rearrange(bspline_basis(points, new_grid[feats], k), "n i c -> i n c")
            coeff[feats] = _fit_spline_coefficients(new_bases, old_values)
        if not bool(torch.isfinite(coeff).all()):
            raise ValueError("refine's least-squares fit was not finite; the layer was left unchanged")
        old_weight = self.spline_weight
        self.grid = new_grid.to(self.grid.dtype).contiguous()
        self.spline_weight = nn.Parameter(
            rearrange(coeff, "i c o -> o i c").to(old_weight.dtype).contiguous(),
            requires_grad=old_weight.requires_grad,
        )
        self.grid_size = new_g

    # ------------------------------------------------------------------ regularisation
    def regularization_loss(
        self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> torch.Tensor:
        """efficient-kan's weight-based proxy of the KAN paper's L1 + entropy regularisation.

        ``l1[o, i] = mean_j |spline_weight[o, i, j]|``; loss = ``regularize_activation * sum(l1)
        + regularize_entropy * H(l1 / sum(l1))``. Finite for all-zero rows and all-zero weights.
        """
        l1 = self.spline_weight.abs().mean(-1)
        total = l1.sum()
        p = l1 / total.clamp_min(torch.finfo(l1.dtype).tiny)
        # 0 * log(0) := 0, with a zero (not NaN) gradient where p == 0.
        positive = p > 0
        entropy = -torch.where(
            positive, p * torch.log(torch.where(positive, p, torch.ones_like(p))), 0.0
        ).sum()
        return regularize_activation * total + regularize_entropy * entropy

    def __prepare_scriptable__(self) -> KANLinear:
        # torch.jit.script calls this on every submodule before compiling; TorchScript is
        # deprecated upstream and cannot compile the autograd Functions this layer runs on.
        raise RuntimeError(
            "KANLinear does not support TorchScript (torch.jit.script/trace); use torch.compile "
            "to optimise it or torch.export to export it"
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}, "
            f"spline_scaler={self.spline_scaler is not None}, backend={self._backend!r}"
        )


class KAN(nn.Module):
    """A stack of ``KANLinear`` layers: ``KAN([784, 64, 10])`` maps 784 features to 10.

    ``layer_kwargs`` go to every ``KANLinear`` (``bias`` defaults to ``False`` here, as in
    efficient-kan's ``KAN``, so its checkpoints load).
    """

    def __init__(self, layers_hidden: Sequence[int], **layer_kwargs) -> None:
        super().__init__()
        widths = list(layers_hidden)
        if len(widths) < 2:
            raise ValueError(f"layers_hidden needs at least two widths (in, out), got {layers_hidden!r}")
        layer_kwargs.setdefault("bias", False)
        self.layers = nn.ModuleList(
            KANLinear(i, o, **layer_kwargs) for i, o in zip(widths[:-1], widths[1:], strict=True)
        )

    @classmethod
    def from_layers(cls, layers: Sequence[KANLinear]) -> KAN:
        """A ``KAN`` over existing layers (each may have its own settings), e.g. after pruning."""
        layers = list(layers)
        if not layers or not all(isinstance(layer, KANLinear) for layer in layers):
            raise TypeError("from_layers needs a non-empty sequence of KANLinear layers")
        for a, b in zip(layers[:-1], layers[1:], strict=False):
            if a.out_features != b.in_features:
                raise ValueError(
                    f"layer widths do not chain: {a.out_features} outputs feed {b.in_features} inputs"
                )
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.layers = nn.ModuleList(layers)
        return model

    def forward(self, x: torch.Tensor, update_grid: bool = False) -> torch.Tensor:
        for layer in self.layers:
            if update_grid:
                layer.update_grid(x)
            x = layer(x)
        return x

    def refine(self, grid_size: int) -> None:
        """Grid extension of every layer to ``grid_size`` intervals, keeping the function
        (:meth:`KANLinear.refine`). In place; build optimizers after it."""
        for layer in self.layers:
            layer.refine(grid_size)

    def regularization_loss(
        self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> torch.Tensor:
        return sum(
            layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers
        )
