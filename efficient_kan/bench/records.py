"""One record schema for every benchmark, and the environment each record carries.

A :class:`Record` is one measured quantity: what was measured (``benchmark``, ``provider``,
``shape``, ``dtype``, ``metric``), its 20/50/80 % quantiles (``p20``/``p80`` equal ``p50`` for a
single number such as a parameter count), and where and how (``device``, ``versions``, ``commit``,
``command``, ``date``). A failed measurement keeps its row with ``error`` set and no numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["SCHEMA", "Record", "environment", "load_records", "merge_records"]

SCHEMA = "efficient_kan.bench/1"


@dataclasses.dataclass
class Record:
    """One measurement (see the module docstring); ``extra`` holds what is specific to a benchmark."""

    benchmark: str
    provider: str
    shape: str
    dtype: str
    metric: str
    p20: float | None
    p50: float | None
    p80: float | None
    unit: str = ""
    device: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    commit: str = ""
    command: str = ""
    date: str = ""
    error: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, env: dict[str, Any], **fields: Any) -> Record:
        """A record with ``env`` (from :func:`environment`) filling device, versions, commit, command,
        date; ``value=`` sets ``p20 = p50 = p80`` for a single number."""
        if "value" in fields:
            v = fields.pop("value")
            fields.update(p20=v, p50=v, p80=v)
        for name in ("p20", "p50", "p80"):
            fields.setdefault(name, None)
        return cls(**{k: env[k] for k in ("device", "versions", "commit", "command", "date")}, **fields)

    def key(self) -> tuple[str, str, str, str, str]:
        """What identifies a measurement across runs (results are merged on it)."""
        return (self.benchmark, self.provider, self.shape, self.dtype, self.metric)

    @property
    def ok(self) -> bool:
        return self.error is None and self.p50 is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _git_commit(repo: Path) -> str:
    """The checkout's commit (with ``+dirty`` when files differ from it), or ``""`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("+dirty" if dirty else "")


def environment(device: torch.device | str, command: list[str] | str | None = None) -> dict[str, Any]:
    """Device name, versions (python, torch, triton, CUDA, driver where present), commit, command
    line and UTC date, in the form :meth:`Record.of` takes."""
    from ..training import device_description

    device = torch.device(device)
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = "not installed"
    import efficient_kan

    versions["efficient_kan"] = efficient_kan.__version__
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
        try:
            versions["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip().splitlines()[0]  # fmt: skip
        except (OSError, subprocess.SubprocessError, IndexError):
            versions["driver"] = "unknown (no nvidia-smi)"
        name = device_description(device)
    else:
        name = f"CPU: {device_description(device)}; {torch.get_num_threads()} torch threads"
    if command is None:
        command = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if not isinstance(command, str):
        command = shlex.join(command)
    return {
        "device": name,
        "versions": versions,
        "commit": _git_commit(Path(__file__).resolve().parents[2]),
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def load_records(path: Path) -> list[Record]:
    """The records of a JSON file written by :func:`efficient_kan.bench.report.write_records`
    (a file of another format raises ``ValueError`` naming it)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a {SCHEMA} records file")
    return [Record(**r) for r in data["records"]]


def merge_records(old: Iterable[Record], new: Iterable[Record]) -> list[Record]:
    """``old`` with every record of the same :meth:`Record.key` replaced by ``new``'s (order kept,
    new keys appended)."""
    merged = {r.key(): r for r in old}
    for r in new:
        merged[r.key()] = r
    return list(merged.values())
