"""Turn an existing model's ``nn.Linear`` layers into ``KANLinear`` layers, in place.

:func:`kanify` converts what it safely can and says what it left alone and why. A linear is left
alone (one warning per call lists them) when converting it would crash later or change what the
model computes:

- code reads its ``weight``/``bias`` directly instead of calling it (``F.linear(x,
  self.proj.weight)``, ``nn.MultiheadAttention.out_proj``, torchvision's Swin attention): found by
  reading the source of every method (other than initialisers) of the classes of its ancestors,
  see :func:`direct_weight_reads`;
- its weight or bias Parameter is tied to another module (an embedding shared with a head);
- it is an uninitialised ``nn.LazyLinear``, a subclass with its own ``forward`` or extra state, a
  parametrized linear, or carries hooks that a replacement would lose.

Conversion keeps identity and state: a linear reached by several paths becomes one shared
``KANLinear``; ``requires_grad``, training mode, device (``meta`` included) and dtype carry over.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layer import KANLinear

__all__ = ["FILTER_PRESETS", "KanifyResult", "direct_weight_reads", "kan_parameter_count", "kanify"]

FILTER_PRESETS = ("head", "mlp-blocks")

# Module names that mark a transformer's MLP block for the "mlp-blocks" preset.
_MLP_BLOCK_NAMES = frozenset({"mlp", "ffn", "feed_forward", "mlp_layer"})

# Methods that (re)initialise parameters: they ran before conversion and read weights only to write
# them, so their reads do not make a linear unconvertible (``__init__``, ``_init_weights``,
# ``reset_parameters``, ``fix_init_weight``, ``initialize_weights``, ...).
_INIT_METHOD = re.compile(r"(^|_)(init|reset)", re.IGNORECASE)

# Growth below this many added parameters is not worth a warning, whatever the ratio.
_WARN_MIN_ADDED = 1_000_000


# ------------------------------------------------------------------------ direct weight reads
@dataclass(frozen=True)
class _Read:
    """``<self>.<path>.<attr>`` read in method ``where``; ``path`` may hold ``*`` (one level) or
    ``**`` (any depth, including none)."""

    path: tuple[str, ...]
    attr: str
    where: str
    owner: type


def _disable_encoder_layer_fast_path(layer: nn.TransformerEncoderLayer) -> None:
    # The inference fast path is gated on this flag; the regular path computes the same function
    # through self.activation, which is left as it is.
    layer.activation_relu_or_gelu = 0


def _disable_encoder_nested_fast_path(encoder: nn.TransformerEncoder) -> None:
    # The constructor's documented switch (enable_nested_tensor) for the nested-tensor fast path.
    encoder.use_nested_tensor = False


# Classes whose methods read linear weights only on an optional inference fast path, with the
# per-instance switch that turns that path off. Reads in methods these classes define are not a
# reason to skip: kanify converts the linears and turns the fast path off on that instance.
_FAST_PATHS: dict[type, tuple[Callable[[nn.Module], None], str]] = {
    nn.TransformerEncoderLayer: (
        _disable_encoder_layer_fast_path,
        "inference fast path turned off (it reads linear1/linear2.weight)",
    ),
    nn.TransformerEncoder: (
        _disable_encoder_nested_fast_path,
        "nested-tensor fast path turned off (use_nested_tensor=False; it reads layers[0].linear*.weight)",
    ),
}

# (module, its qualified name, the switch, what the summary says) for each fast path to turn off.
_FastPathUse = tuple[nn.Module, str, Callable[[nn.Module], None], str]

# Known readers, in case their source cannot be read: parent class -> children whose weight it reads.
_KNOWN_READERS: dict[type, tuple[str, ...]] = {nn.MultiheadAttention: ("out_proj",)}

_ITER_ALL = frozenset({"modules", "named_modules"})
_ITER_CHILDREN = frozenset({"children", "named_children", "values", "items"})
_PAIR_ITERATORS = frozenset({"named_modules", "named_children", "items", "enumerate"})


class _ReadFinder:
    """Finds ``self.<path>.weight|bias`` (and aliases of ``self.<path>``) in one function."""

    def __init__(self, func_node: ast.AST, self_name: str) -> None:
        self.node = func_node
        self.self_name = self_name
        self.aliases: dict[str, set[tuple[str, ...]]] = {}

    def paths(self, node: ast.AST) -> set[tuple[str, ...]]:
        """The module paths (relative to self) an expression may denote; empty if none."""
        if isinstance(node, ast.Name):
            if node.id == self.self_name:
                return {()}
            return self.aliases.get(node.id, set())
        if isinstance(node, ast.Attribute):
            return {p + (node.attr,) for p in self.paths(node.value)}
        if isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and (
                isinstance(key.value, str) or (isinstance(key.value, int) and key.value >= 0)
            ):
                part = str(key.value)
            else:
                part = "*"
            return {p + (part,) for p in self.paths(node.value)}
        if isinstance(node, ast.Call) and _is_getattr(node):
            return {p + (node.args[1].value,) for p in self.paths(node.args[0])}
        return set()

    def element_paths(self, it: ast.AST) -> tuple[set[tuple[str, ...]], bool]:
        """Paths of the elements of an iterated expression, and whether they come as pairs."""
        if (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "enumerate"
            and it.args
        ):
            return self.element_paths(it.args[0])[0], True
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute):
            method = it.func.attr
            base = self.paths(it.func.value)
            if method in _ITER_ALL:
                return {p + ("**",) for p in base}, method in _PAIR_ITERATORS
            if method in _ITER_CHILDREN:
                return {p + ("*",) for p in base}, method in _PAIR_ITERATORS
            return set(), False
        return {p + ("*",) for p in self.paths(it)}, False

    def _bind(self, target: ast.AST, paths: set[tuple[str, ...]]) -> bool:
        if isinstance(target, ast.Name) and paths:
            before = self.aliases.setdefault(target.id, set())
            if not paths <= before:
                before |= paths
                return True
        return False

    def _collect_aliases(self) -> bool:
        changed = False
        for node in ast.walk(self.node):
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr):
                value = node.value
                if value is None:
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                        for t, v in zip(target.elts, value.elts, strict=False):
                            changed |= self._bind(t, self.paths(v))
                    else:
                        changed |= self._bind(target, self.paths(value))
            elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                paths, pairs = self.element_paths(node.iter)
                target = node.target
                if pairs and isinstance(target, ast.Tuple) and len(target.elts) == 2:
                    target = target.elts[1]
                changed |= self._bind(target, paths)
        return changed

    def reads(self) -> set[tuple[tuple[str, ...], str]]:
        for _ in range(8):  # aliases of aliases: iterate to a fixed point (chains are short)
            if not self._collect_aliases():
                break
        found: set[tuple[tuple[str, ...], str]] = set()
        for node in ast.walk(self.node):
            if isinstance(node, ast.Attribute) and node.attr in ("weight", "bias"):
                base = self.paths(node.value)
            elif (
                isinstance(node, ast.Call) and _is_getattr(node) and node.args[1].value in ("weight", "bias")
            ):
                base = self.paths(node.args[0])
            else:
                continue
            attr = node.attr if isinstance(node, ast.Attribute) else node.args[1].value
            found |= {(p, attr) for p in base if p}  # p == (): the module's own weight
        return found


def _is_getattr(node: ast.Call) -> bool:
    return (
        isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    )


def _functions_of(cls: type) -> Iterable[tuple[str, Callable]]:
    for name, member in vars(cls).items():
        if isinstance(member, staticmethod):
            continue  # no self to read from
        if isinstance(member, classmethod):
            member = member.__func__
        if isinstance(member, property):
            for fn in (member.fget, member.fset, member.fdel):
                if fn is not None:
                    yield name, fn
        elif inspect.isfunction(member):
            yield name, member


@functools.cache
def _class_reads(cls: type) -> tuple[tuple[_Read, ...], tuple[str, ...]]:
    """Direct weight reads in the methods ``cls`` itself defines, and methods whose source is
    unavailable (so could not be checked)."""
    reads: list[_Read] = []
    unreadable: list[str] = []
    for name, fn in _functions_of(cls):
        if _INIT_METHOD.search(name):
            continue
        where = f"{cls.__name__}.{name}"
        try:
            source = textwrap.dedent(inspect.getsource(inspect.unwrap(fn)))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError):
            unreadable.append(where)
            continue
        func = next(
            (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)),
            None,
        )
        if func is None or not func.args.args:
            continue
        finder = _ReadFinder(func, func.args.args[0].arg)
        for path, attr in sorted(finder.reads(), key=lambda r: (r[0], r[1] != "weight")):
            reads.append(_Read(path, attr, where, cls))
    return tuple(reads), tuple(unreadable)


def _module_reads(module: nn.Module) -> tuple[list[_Read], list[str]]:
    reads: list[_Read] = []
    unreadable: list[str] = []
    for cls in type(module).__mro__:
        if cls in (nn.Module, object):
            continue
        r, u = _class_reads(cls)
        reads.extend(r)
        unreadable.extend(u)
        for child in _KNOWN_READERS.get(cls, ()):
            reads.append(_Read((child,), "weight", f"{cls.__name__}.forward", cls))
    return reads, unreadable


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and _matches(rest, path[1:])


def direct_weight_reads(model: nn.Module) -> dict[str, list[str]]:
    """Which submodules of ``model`` some code reads the ``weight``/``bias`` of directly.

    Reads the source (``inspect`` + ``ast``) of every method, except initialisers (names that start
    with ``init``/``reset`` or contain ``_init``/``_reset``, any case: ``__init__``,
    ``reset_parameters``, ``_init_weights``), of every class in each module's MRO, and finds attribute chains rooted at
    ``self`` that end in ``.weight`` or ``.bias``: ``self.proj.weight``, ``self.blocks[0].fc.bias``,
    ``getattr(self.proj, "weight")``, and the same through local names bound to such chains
    (``layer = self.layers[0]``; ``for blk in self.blocks``; ``self.modules()``). Returns
    ``{qualified name: ["Class.method reads self.path.attr", ...]}`` for every path that names a
    submodule. Code that reads a weight through an argument or another object is not seen.
    """
    found: dict[str, list[str]] = {}
    names = dict(model.named_modules(remove_duplicate=False))
    for prefix, module in names.items():
        reads, _ = _module_reads(module)
        for read in reads:
            for fqn in names:
                rel = _relative(prefix, fqn)
                if rel and _matches(read.path, rel):
                    found.setdefault(fqn, []).append(_describe(read))
    return found


def _relative(prefix: str, fqn: str) -> tuple[str, ...] | None:
    if not prefix:
        return tuple(fqn.split(".")) if fqn else None
    if fqn.startswith(prefix + "."):
        return tuple(fqn[len(prefix) + 1 :].split("."))
    return None


def _describe(read: _Read) -> str:
    return f"{read.where} reads self.{'.'.join(read.path)}.{read.attr}"


# ------------------------------------------------------------------------ parameter counts
def kan_parameter_count(
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    grid_size: int = 5,
    spline_order: int = 3,
    enable_standalone_scale_spline: bool = True,
) -> int:
    """Parameters of ``KANLinear(in_features, out_features, bias, grid_size=..., ...)``, computed
    without allocating it: base ``I*O``, splines ``I*O*(G+K)``, scaler ``I*O``, bias ``O``."""
    per_edge = 1 + grid_size + spline_order + (1 if enable_standalone_scale_spline else 0)
    return in_features * out_features * per_edge + (out_features if bias else 0)


def _kan_count_for(linear: nn.Linear, kwargs: dict) -> int:
    defaults = {
        name: p.default
        for name, p in inspect.signature(KANLinear.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    opts = {**defaults, **kwargs}
    return kan_parameter_count(
        linear.in_features,
        linear.out_features,
        linear.bias is not None,
        grid_size=opts["grid_size"],
        spline_order=opts["spline_order"],
        enable_standalone_scale_spline=opts["enable_standalone_scale_spline"],
    )


def _count_parameters(model: nn.Module) -> int:
    # parameters() counts a shared one once; an uninitialised (lazy) one has no size yet: 0.
    return sum(
        0 if isinstance(p, nn.parameter.UninitializedParameter) else p.numel() for p in model.parameters()
    )


# ------------------------------------------------------------------------ the result
class KanifyResult(list):
    """What :func:`kanify` did: a ``list`` of the qualified names replaced (as before), plus

    - ``skipped``: ``[(name, reason), ...]`` linears left alone for a reason (warned about);
    - ``not_selected``: names of linears the ``filter`` did not select;
    - ``notes``: other changes made (a fast path turned off, a layer shared by several names);
    - ``params_before``, ``params_after``: the model's parameter count before and after
      (after is computed before anything is allocated).

    ``str(result)`` is a summary table; ``repr`` is the list's.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__(names)
        self.skipped: list[tuple[str, str]] = []
        self.not_selected: list[str] = []
        self.notes: list[str] = []
        self.params_before = 0
        self.params_after = 0
        self._sizes: dict[str, tuple[int, int, int, int]] = {}

    @property
    def growth(self) -> float:
        """``params_after / params_before`` (``inf`` for a model without parameters)."""
        return self.params_after / self.params_before if self.params_before else float("inf")

    def __str__(self) -> str:
        lines = [
            f"kanify: {len(self)} converted, {len(self.skipped)} skipped, "
            f"{len(self.not_selected)} not selected by the filter; parameters "
            f"{self.params_before:,} -> {self.params_after:,} (x{self.growth:.2f})"
        ]
        width = max([len(n) for n in self] + [len(n) for n, _ in self.skipped] + [4])
        for name in self:
            i, o, before, after = self._sizes[name]
            lines.append(f"  converted  {name:<{width}}  {i} -> {o}, params {before:,} -> {after:,}")
        for name, reason in self.skipped:
            lines.append(f"  skipped    {name:<{width}}  {reason}")
        for note in self.notes:
            lines.append(f"  note       {note}")
        return "\n".join(lines)


# ------------------------------------------------------------------------ filters
def _preset_filter(preset: str, model: nn.Module) -> Callable[[nn.Module, str], bool]:
    if preset == "head":
        last = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear | KANLinear):
                last = name
        return lambda module, fqn: fqn == last
    if preset == "mlp-blocks":
        modules = dict(model.named_modules(remove_duplicate=False))

        def in_mlp_block(module: nn.Module, fqn: str) -> bool:
            parts = fqn.split(".")
            if any(part in _MLP_BLOCK_NAMES for part in parts):
                return True
            parent = modules.get(".".join(parts[:-1]), None) if len(parts) > 1 else model
            if isinstance(parent, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
                return parts[-1] in ("linear1", "linear2")
            for k in range(len(parts)):
                ancestor = modules.get(".".join(parts[:k]), None) if k else model
                if ancestor is not None and _is_torchvision_mlp_block(ancestor):
                    return True
            return False

        return in_mlp_block
    raise ValueError(f"filter must be a callable or one of {FILTER_PRESETS}, got {preset!r}")


def _is_torchvision_mlp_block(module: nn.Module) -> bool:
    # By name, so torchvision stays an optional dependency: torchvision.ops.MLP (ViT's MLPBlock,
    # Swin's MLP) and ConvNeXt's CNBlock.
    for cls in type(module).__mro__:
        mod = cls.__module__ or ""
        if (cls.__name__ == "MLP" and mod.startswith("torchvision.ops")) or (
            cls.__name__ == "CNBlock" and mod.startswith("torchvision.models.convnext")
        ):
            return True
    return False


# ------------------------------------------------------------------------ kanify
@dataclass
class _Linear:
    module: nn.Linear
    places: list[tuple[nn.Module, str, str]]  # (parent, attribute name, qualified name)
    ancestors: list[list[tuple[str, nn.Module]]]  # per place: (prefix, module) from the root down


def _collect(model: nn.Module) -> dict[int, _Linear]:
    found: dict[int, _Linear] = {}

    def visit(parent: nn.Module, prefix: str, chain: list[tuple[str, nn.Module]], seen: set[int]) -> None:
        chain = chain + [(prefix, parent)]
        for name, child in parent._modules.items():  # not named_children(): it hides repeats
            if child is None:
                continue
            fqn = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Linear):
                entry = found.setdefault(id(child), _Linear(child, [], []))
                entry.places.append((parent, name, fqn))
                entry.ancestors.append(chain)
            elif isinstance(child, KANLinear) or id(child) in seen:
                continue
            else:
                visit(child, fqn, chain, seen | {id(child)})

    visit(model, "", [], {id(model)})
    return found


def _own_state_reason(linear: nn.Linear) -> str | None:
    """Why ``linear`` itself cannot be replaced (None if it can)."""
    cls = type(linear)
    if isinstance(linear, nn.modules.lazy.LazyModuleMixin) and linear.has_uninitialized_params():
        return "uninitialised nn.LazyLinear: run one forward pass first so it has a shape"
    if getattr(linear, "parametrizations", None) is not None:
        return "its weight is parametrized (torch.nn.utils.parametrize); a replacement would drop that"
    if cls.forward is not nn.Linear.forward:
        return f"{cls.__name__} overrides nn.Linear.forward; a KANLinear would not compute what it does"
    extra = [n for n, _ in linear.named_parameters(recurse=False) if n not in ("weight", "bias")]
    extra += [n for n, _ in linear.named_buffers(recurse=False)]
    extra += [n for n, _ in linear.named_children()]
    if extra:
        return f"{cls.__name__} holds state beyond weight/bias ({', '.join(extra)}) that would be lost"
    hooks = [
        kind
        for kind in ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
        if getattr(linear, kind, None)
    ]
    if hooks:
        return f"it has hooks ({', '.join(h.strip('_') for h in hooks)}) that a replacement would lose"
    weight = linear.weight
    if not weight.is_floating_point():
        return f"its weight is {weight.dtype}, not a real floating-point type"
    if type(weight.data) is not torch.Tensor:
        return f"its weight is a {type(weight.data).__name__}; convert before sharding or quantising"
    return None


def kanify(
    model: nn.Module,
    *,
    filter: Callable[[nn.Module, str], bool] | str | None = None,
    calibrate: Any = None,
    max_params: int | None = None,
    warn_growth: float | None = 2.0,
    verbose: bool = False,
    **kwargs,
) -> KanifyResult:
    """Replace the ``nn.Linear`` submodules of ``model`` by ``KANLinear.from_linear(linear, **kwargs)``.

    Args:
        model: modified in place.
        filter: ``filter(linear, qualified_name) -> bool`` selects the linears to convert (a linear
            reached by several names is converted only if every name is selected), or a preset:

            - ``"head"``: only the ``nn.Linear`` registered last in ``model.named_modules()`` (in
              torchvision classifiers the output layer: ResNet ``fc``, ViT ``heads.head``, Swin
              ``head``, ConvNeXt/VGG/MaxViT ``classifier``'s last); nothing if that module is
              already a ``KANLinear``.
            - ``"mlp-blocks"``: linears inside a ``torchvision.ops.MLP`` (ViT's ``MLPBlock``, Swin's
              MLP) or a torchvision ConvNeXt ``CNBlock``; ``linear1``/``linear2`` of
              ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer``; and linears with a
              name component (their own or an ancestor's) equal to ``mlp``, ``ffn``,
              ``feed_forward`` or ``mlp_layer`` (MaxViT).
        calibrate: data (see :func:`efficient_kan.update_grids`) run once through the converted
            model to place each converted layer's knots on its inputs, keeping its function
            (exactly with ``init="linear"``, up to a least-squares refit otherwise).
        max_params: refuse (``ValueError``, model untouched) if the converted model would have more
            parameters than this.
        warn_growth: warn if the converted model would have more than this many times the
            parameters (and at least 1,000,000 more); ``None`` never warns.
        verbose: print the summary (``str`` of the result).
        kwargs: passed to :meth:`KANLinear.from_linear` (``init="linear"`` keeps the function;
            ``grid_size``, ``spline_order``, ...).

    Returns a :class:`KanifyResult`: the list of qualified names replaced, with ``skipped`` (and
    why), ``params_before`` and ``params_after``.

    What carries over: a linear reached by several names becomes one shared ``KANLinear``; the
    weight's ``requires_grad`` goes to ``base_weight``, ``spline_weight`` and ``spline_scaler``
    (a frozen linear gives a frozen KAN layer), ``bias`` keeps its own; training mode, device
    (``meta`` too: initialise later with ``to_empty`` + ``reset_parameters()``) and dtype.

    Left alone, with one warning listing each and why: linears whose weight or bias some code reads
    directly (see :func:`direct_weight_reads`; torch's transformer layers are converted with their
    inference fast path turned off instead, since only that path reads the weights), linears whose
    weight/bias is tied to another module, uninitialised ``nn.LazyLinear``, ``nn.Linear``
    subclasses with their own ``forward`` or extra state, parametrized linears, linears with hooks.
    """
    if isinstance(model, nn.Linear):
        raise ValueError(
            "kanify replaces submodules in place; for a bare nn.Linear use KANLinear.from_linear"
        )
    if isinstance(filter, str):
        filter = _preset_filter(filter, model)
    elif filter is not None and not callable(filter):
        raise TypeError(f"filter must be a callable or one of {FILTER_PRESETS}, got {filter!r}")

    result = KanifyResult()
    to_convert, fast_paths = _select_linears(model, filter, result)
    planned = _plan(model, to_convert, kwargs, result)
    _check_growth(result, planned, max_params, warn_growth)
    new_layers = _replace(to_convert, fast_paths, kwargs, result)
    result.extend(planned)
    if result.skipped:
        lines = "\n".join(f"  {name}: {reason}" for name, reason in result.skipped)
        warnings.warn(
            f"kanify left {len(result.skipped)} linear layer(s) as nn.Linear:\n{lines}",
            stacklevel=2,
        )
    if calibrate is not None and new_layers:
        from .models import update_grids

        update_grids(model, calibrate, layers=new_layers)
    if verbose:
        print(result)
    return result


def _select_linears(
    model: nn.Module, filter: Callable[[nn.Module, str], bool] | None, result: KanifyResult
) -> tuple[list[_Linear], dict[int, _FastPathUse]]:
    """The linears ``kanify`` converts, and the inference fast paths to turn off for them; the
    ones the filter leaves out, and those skipped with their reason, go into ``result``."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for pname, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((module, f"{name}.{pname}" if name else pname))
    to_convert: list[_Linear] = []
    fast_paths: dict[int, _FastPathUse] = {}
    for entry in _collect(model).values():
        names = [fqn for _, _, fqn in entry.places]
        label = " / ".join(names)
        if filter is not None:
            selected = [filter(entry.module, fqn) for fqn in names]
            if not any(selected):
                result.not_selected.extend(names)
                continue
            if not all(selected):
                chosen = [n for n, s in zip(names, selected, strict=True) if s]
                result.skipped.append(
                    (label, f"one layer under several names and the filter selected only {', '.join(chosen)}")
                )
                continue
        reason = _own_state_reason(entry.module)
        if reason is None:
            reason = _tied_reason(entry.module, owners)
        pending_fast_paths: dict[int, _FastPathUse] = {}
        if reason is None:
            reason = _read_reason(entry, pending_fast_paths)
        if reason is not None:
            result.skipped.append((label, reason))
            continue
        fast_paths.update(pending_fast_paths)
        to_convert.append(entry)
    return to_convert, fast_paths


def _plan(model: nn.Module, to_convert: list[_Linear], kwargs: dict, result: KanifyResult) -> list[str]:
    """Counts the parameters before and after into ``result``; returns the names to convert, in
    the order the model lists them (as kanify always returned them)."""
    result.params_before = _count_parameters(model)
    removed = sum(_count_parameters(e.module) for e in to_convert)
    added = 0
    for entry in to_convert:
        count = _kan_count_for(entry.module, kwargs)
        added += count
        lin = entry.module
        sizes = (lin.in_features, lin.out_features, _count_parameters(lin), count)
        for _, _, fqn in entry.places:
            result._sizes[fqn] = sizes
    result.params_after = result.params_before - removed + added
    order = {fqn: i for i, fqn in enumerate(_place_order(model))}
    return sorted((fqn for e in to_convert for _, _, fqn in e.places), key=order.__getitem__)


def _check_growth(
    result: KanifyResult, planned: list[str], max_params: int | None, warn_growth: float | None
) -> None:
    """Refuses (before anything changed) past ``max_params``; warns past ``warn_growth``."""
    if max_params is not None and result.params_after > max_params:
        result.extend(planned)
        raise ValueError(
            f"kanify would grow the model to {result.params_after:,} parameters, more than "
            f"max_params={max_params:,}; nothing was converted. Convert less (a narrower filter, "
            f"e.g. 'head') or use a smaller grid_size. What it would have done:\n{result}"
        )
    if (
        warn_growth is not None
        and result.params_after > warn_growth * result.params_before
        and result.params_after - result.params_before >= _WARN_MIN_ADDED
    ):
        warnings.warn(
            f"kanify grows the model's parameters from {result.params_before:,} to "
            f"{result.params_after:,} (x{result.growth:.1f}); pass max_params= to refuse, a "
            f"narrower filter (e.g. 'head') or a smaller grid_size to convert less, or "
            f"warn_growth=None to silence this",
            stacklevel=3,  # kanify's caller
        )


def _replace(
    to_convert: list[_Linear], fast_paths: dict[int, _FastPathUse], kwargs: dict, result: KanifyResult
) -> list[KANLinear]:
    """Converts each selected linear once and puts it under every name it had; turns off the
    fast paths that would read the replaced weights. Returns the new layers."""
    new_layers: list[KANLinear] = []
    for entry in to_convert:
        layer = _convert_one(entry.module, kwargs)
        new_layers.append(layer)
        for parent, name, _ in entry.places:
            setattr(parent, name, layer)
        if len(entry.places) > 1:
            result.notes.append(
                f"{' and '.join(fqn for _, _, fqn in entry.places)} are one shared KANLinear (one shared nn.Linear before)"
            )
    for module, prefix, turn_off, note in fast_paths.values():
        turn_off(module)
        result.notes.append(f"{prefix or '<model>'}: {note}")
    return new_layers


def _place_order(model: nn.Module) -> list[str]:
    order: list[str] = []

    def visit(parent: nn.Module, prefix: str, seen: set[int]) -> None:
        for name, child in parent._modules.items():
            if child is None:
                continue
            fqn = f"{prefix}.{name}" if prefix else name
            order.append(fqn)
            if not isinstance(child, nn.Linear | KANLinear) and id(child) not in seen:
                visit(child, fqn, seen | {id(child)})

    visit(model, "", {id(model)})
    return order


def _tied_reason(linear: nn.Linear, owners: dict[int, list[tuple[nn.Module, str]]]) -> str | None:
    for attr in ("weight", "bias"):
        param = getattr(linear, attr)
        if param is None:
            continue
        others = sorted({name for module, name in owners.get(id(param), []) if module is not linear})
        if others:
            return (
                f"its {attr} is tied to {', '.join(others)} (the same Parameter); left alone to keep the tie"
            )
    return None


def _read_reason(entry: _Linear, fast_paths: dict[int, _FastPathUse]) -> str | None:
    """Why some code's direct weight reads forbid converting ``entry`` (None if nothing does);
    fills ``fast_paths`` with the fast paths to turn off if it is converted."""
    for (_, _, fqn), chain in zip(entry.places, entry.ancestors, strict=True):
        for prefix, ancestor in chain:
            rel = _relative(prefix, fqn)
            reads, unreadable = _module_reads(ancestor)
            if unreadable:
                return (
                    f"the source of {', '.join(unreadable)} is unavailable, so kanify cannot check that it "
                    f"does not read the weight directly (define the class in a file)"
                )
            for read in reads:
                if not _matches(read.path, rel):
                    continue
                if read.owner in _FAST_PATHS:
                    fast_paths[id(ancestor)] = (ancestor, prefix, *_FAST_PATHS[read.owner])
                    continue
                return f"{_describe(read)} directly (a KANLinear has no weight)"
    return None


def _convert_one(linear: nn.Linear, kwargs: dict) -> KANLinear:
    layer = KANLinear.from_linear(linear, **kwargs)
    frozen = not linear.weight.requires_grad
    for param in (layer.base_weight, layer.spline_weight, layer.spline_scaler):
        if param is not None:
            param.requires_grad_(not frozen)
    if layer.bias is not None:
        layer.bias.requires_grad_(linear.bias.requires_grad)
    layer.train(linear.training)
    return layer
