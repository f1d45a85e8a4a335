"""Turn an existing model's ``nn.Linear`` layers into ``KANLinear`` layers, in place."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

from .layer import KANLinear

__all__ = ["kanify"]

# Parents that read their linear child's ``weight``/``bias`` directly instead of calling it:
# replacing the child would break (or silently bypass) them. MultiheadAttention reads
# ``out_proj.weight`` in ``F.multi_head_attention_forward``.
_PARENTS_READING_WEIGHTS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


def kanify(
    model: nn.Module,
    *,
    filter: Callable[[nn.Module, str], bool] | None = None,
    **kwargs,
) -> list[str]:
    """Replace the ``nn.Linear`` submodules of ``model`` by ``KANLinear.from_linear(linear, **kwargs)``.

    Args:
        model: modified in place.
        filter: ``filter(linear, qualified_name) -> bool``; only linears it accepts are replaced.
        kwargs: passed to :meth:`KANLinear.from_linear` (``init="linear"`` keeps the function).

    Returns the qualified names replaced. Linears whose parent reads their weight directly
    (``nn.MultiheadAttention.out_proj``) are left alone, with a warning naming them.
    """
    if isinstance(model, nn.Linear):
        raise ValueError(
            "kanify replaces submodules in place; for a bare nn.Linear use KANLinear.from_linear"
        )
    replaced: list[str] = []
    skipped: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            fqn = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Linear):
                if isinstance(parent, _PARENTS_READING_WEIGHTS):
                    skipped.append(fqn)
                elif filter is None or filter(child, fqn):
                    setattr(parent, name, KANLinear.from_linear(child, **kwargs))
                    replaced.append(fqn)
                continue
            visit(child, fqn)

    visit(model, "")
    if skipped:
        warnings.warn(
            f"kanify left {len(skipped)} linear layer(s) alone because their parent reads the weight "
            f"directly: {', '.join(skipped)}",
            stacklevel=2,
        )
    return replaced
