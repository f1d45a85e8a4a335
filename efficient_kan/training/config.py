"""The run configuration, and the command line derived from it (one definition of every flag)."""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..data import DATASETS

__all__ = [
    "AMP_MODES",
    "ARCHS",
    "DEVICES",
    "KAN_PLACES",
    "MODELS",
    "ConfigError",
    "TrainConfig",
    "build_parser",
    "config_from_args",
]

MODELS = ("kan", "mlp")
ARCHS = ("mlp", "cnn", "vit")
KAN_PLACES = ("none", "head", "mlp-blocks", "all")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration, device or checkpoint problem, reported to CLI users as one line."""


# ------------------------------------------------------------------------------- field checks
# Each check returns None for a good value or the reason it is bad; the parser (at the flag) and
# TrainConfig.validate (for configs built in code) use the same function, so the rule lives once.
Check = Callable[[Any], "str | None"]


def at_least(minimum: int) -> Check:
    """Integers ``>= minimum``."""

    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}, got {value}"

    return check


def _positive(value: float) -> str | None:
    return None if value > 0 and math.isfinite(value) else f"must be a positive number, got {value}"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 and math.isfinite(value) else f"must be >= 0, got {value}"


def _unit_interval(value: float) -> str | None:
    return None if 0 < value <= 1 else f"must lie in (0, 1], got {value}"


def _widths_ok(value: Sequence[int]) -> str | None:
    if len(value) < 2 or any(w < 1 for w in value):
        return f"needs at least two positive sizes like 784,64,10, got {','.join(map(str, value))}"
    return None


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers like 784,64,10, got {text!r}") from None


def opt(
    default: Any,
    help: str,
    *,
    group: str,
    check: Check | None = None,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A :class:`TrainConfig` field and everything its command-line flag needs.

    ``flag`` overrides the flag name (``--offline`` stores ``False`` into ``download``); ``parse``
    turns the flag's text into the value (default: the field's type); ``check`` is the per-value
    rule shared by the parser and :meth:`TrainConfig.validate`.
    """
    meta = dict(help=help, group=group, check=check, choices=choices, parse=parse, flag=flag, metavar=metavar)
    return field(default=default, metadata={"cli": meta})


@dataclass
class TrainConfig:
    """Everything one training run needs; the defaults are those of ``python train_mnist.py``.

    Every field with ``cli`` metadata is a flag of ``train_mnist.py`` (see :func:`build_parser`).
    """

    arch: str = opt(
        "mlp", "mlp: KAN/MLP of --widths; cnn, vit: small vision models", group="model", choices=ARCHS
    )
    kan: str = opt(
        "none",
        "cnn/vit: which linears become KAN layers (head = final classifier linear, mlp-blocks = "
        "hidden MLP linears, all = both)",
        group="model",
        choices=KAN_PLACES,
    )
    model: str = opt("kan", "--arch mlp: KAN (B-spline layers) or ReLU MLP", group="model", choices=MODELS)
    widths: tuple[int, ...] = opt(
        (784, 64, 10),
        "--arch mlp: layer widths, 784,...,10",
        group="model",
        check=_widths_ok,
        parse=_parse_widths,
    )
    hidden: int | None = opt(
        None,
        "cnn: hidden width of the classifier MLP (default 64); vit: MLP-block width (default 128)",
        group="model",
        check=at_least(1),
    )
    grid_size: int = opt(5, "KAN grid intervals G", group="model", check=at_least(1))
    spline_order: int = opt(3, "KAN B-spline order K", group="model", check=at_least(0))
    epochs: int = opt(10, "training epochs", group="training", check=at_least(1))
    batch_size: int = opt(64, "samples per step (per rank under DDP)", group="training", check=at_least(1))
    lr: float = opt(1e-3, "AdamW learning rate", group="training", check=_positive)
    weight_decay: float = opt(1e-4, "AdamW weight decay", group="training", check=_non_negative)
    gamma: float = opt(0.8, "ExponentialLR decay per epoch", group="training", check=_unit_interval)
    seed: int = opt(0, "model initialisation and shuffling", group="training")
    update_grid_every: int = opt(
        0,
        "KAN: update_grid on the current batch every N steps (all ranks' batches under DDP); 0 = never",
        group="training",
        check=at_least(0),
        metavar="N",
    )
    dataset: str = opt(
        "auto",
        "auto: MNIST, or offline the bundled 5,000-digit MNIST subset (mnist-5k); a dataset named "
        "here never falls back; cifar10 needs its files under --data-dir",
        group="data",
        choices=DATASETS,
    )
    data_dir: str = opt(
        "data",
        "IDX files here (or DIR/MNIST/raw, DIR/FashionMNIST/raw; Fashion-MNIST also in "
        "/usr/share/datasets/fashion-mnist; CIFAR-10 in DIR/cifar-10-batches-py); downloads go here",
        group="data",
    )
    download: bool = opt(True, "never try to download", group="data", flag="offline")
    train_limit: int | None = opt(None, "use N train samples", group="data", check=at_least(1), metavar="N")
    test_limit: int | None = opt(None, "use N test samples", group="data", check=at_least(1), metavar="N")
    device: str = opt("auto", "auto = CUDA if available", group="runtime", choices=DEVICES)
    amp: str = opt("none", "autocast dtype (fp16 needs CUDA)", group="runtime", choices=AMP_MODES)
    compile: bool = opt(False, "torch.compile the model", group="runtime")
    threads: int | None = opt(None, "CPU threads (torch.set_num_threads)", group="runtime", check=at_least(1))
    save: str | None = opt(None, "write a checkpoint here after every epoch", group="output", metavar="PATH")
    resume: bool = opt(False, "continue from the --save checkpoint if it exists", group="output")
    json: str | None = opt(None, "write the results as JSON", group="output", metavar="PATH")
    quiet: bool = opt(False, "no progress bars or per-epoch lines", group="output")
    eval_batch_size: int = field(default=1000, metadata={"check": at_least(1)})
    command: str = ""

    @property
    def input_features(self) -> int:
        """Flattened pixels per sample of :attr:`dataset` (32x32x3 for CIFAR-10, else 28x28)."""
        return 3072 if self.dataset == "cifar10" else 784

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line reason for an unusable configuration."""
        for f in fields(self):
            meta = f.metadata.get("cli", f.metadata)
            value = getattr(self, f.name)
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{_flag(f)} must be one of {', '.join(meta['choices'])}, got {value!r}")
            problem = meta["check"](value) if meta.get("check") and value is not None else None
            if problem:
                raise ConfigError(f"{_flag(f)} {problem}")
        widths, n_in = tuple(self.widths), self.input_features
        if self.arch == "mlp" and (widths[0] != n_in or widths[-1] != 10):
            pixels = "32x32x3 pixels" if n_in == 3072 else "28x28 pixels"
            raise ConfigError(
                f"--widths must start with {n_in} ({pixels}) and end with 10 (classes), got "
                f"{','.join(map(str, widths))}"
            )
        if self.arch != "mlp":
            if widths != TrainConfig.__dataclass_fields__["widths"].default or self.model != "kan":
                raise ConfigError(f"--model and --widths describe --arch mlp; --arch {self.arch} uses --kan")
        elif self.kan != "none" or self.hidden is not None:
            raise ConfigError(
                "--kan and --hidden need --arch cnn or vit (for --arch mlp use --model, --widths)"
            )
        if self.update_grid_every and (self.model != "kan" or self.arch != "mlp"):
            raise ConfigError("--update-grid-every needs --model kan (an MLP has no grid)")
        if self.resume and not self.save:
            raise ConfigError("--resume needs --save PATH (the checkpoint to resume from and keep writing)")

    @property
    def is_kan(self) -> bool:
        """Whether the model has KAN layers (grid size and spline order matter)."""
        return (self.arch == "mlp" and self.model == "kan") or (self.arch != "mlp" and self.kan != "none")


def _flag(f) -> str:
    meta = f.metadata.get("cli") or {}
    return "--" + (meta.get("flag") or f.name).replace("_", "-")


# ------------------------------------------------------------------------------------ the parser
class _OneLineParser(argparse.ArgumentParser):
    """Bad flags: one line (``PROG: error: ...``) and exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the uninformative ``None`` / ``False`` ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Identity, not equality: a default of 0 is informative, False is not.
        if action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS:
            return action.help
        if isinstance(action.default, tuple):
            return f"{action.help} (default: {','.join(map(str, action.default))})"
        return super()._get_help_string(action)


def _value_type(f, meta: dict[str, Any]) -> Callable[[str], Any]:
    """The argparse ``type`` of a field: its parser (or int/float/str), then its check."""
    # Annotations are strings here (``from __future__ import annotations``): "int | None" -> int.
    base = meta.get("parse") or {"int": int, "float": float}.get(str(f.type).split("|")[0].strip(), str)
    kind = {int: "an integer", float: "a number"}.get(base)

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}" if kind else str(err)) from None
        problem = meta["check"](value) if meta.get("check") else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = getattr(base, "__name__", "value")
    return parse


def build_parser(prog: str = "train_mnist.py", description: str | None = None) -> argparse.ArgumentParser:
    """The command line of :class:`TrainConfig`: one flag per field with ``cli`` metadata."""
    parser = _OneLineParser(prog=prog, description=description, formatter_class=_Formatter)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(TrainConfig):
        meta = f.metadata.get("cli")
        if meta is None:
            continue
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(meta["group"])
        )
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["default"] = f.default if f.default is not MISSING else None
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            else:
                kwargs["type"] = _value_type(f, meta)
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        group.add_argument(_flag(f), **kwargs)
    return parser


def config_from_args(
    args: argparse.Namespace, argv: Sequence[str], prog: str = "train_mnist.py"
) -> TrainConfig:
    """The :class:`TrainConfig` for ``args`` from :func:`build_parser` (``argv`` is recorded)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if "cli" in f.metadata}
    values["widths"] = tuple(values["widths"])
    return TrainConfig(**values, command=shlex.join(["python", prog, *argv]))
