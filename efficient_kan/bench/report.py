"""Writing results: records to JSON/CSV/markdown, a markdown table, and one plotting function."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .records import SCHEMA, Record

__all__ = [
    "format_quantiles",
    "markdown_table",
    "plot",
    "records_table",
    "write_csv",
    "write_json",
    "write_records",
]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` has one letter per column (``l``/``r``; default left)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} needs one letter per column ({len(header)})")
    rule = ["--:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


def format_quantiles(r: Record | None, digits: int = 3) -> str:
    """``median [p20, p80]``, the error text of a failed record, or ``-`` for none."""
    if r is None:
        return "-"
    if not r.ok:
        return (r.error or "-")[:40]
    if r.p20 == r.p50 == r.p80:
        return f"{r.p50:.{digits}f}"
    return f"{r.p50:.{digits}f} [{r.p20:.{digits}f}, {r.p80:.{digits}f}]"


def records_table(
    records: Sequence[Record],
    row_fields: Sequence[str] = ("shape", "dtype", "metric"),
    column_field: str = "provider",
    cell: Callable[[Record | None], str] = format_quantiles,
) -> str:
    """Records pivoted into a markdown table: one row per distinct ``row_fields`` value, one column
    per distinct ``column_field`` value (both in first-seen order)."""
    rows: dict[tuple, dict[str, Record]] = {}
    columns: list[str] = []
    for r in records:
        col = str(getattr(r, column_field))
        if col not in columns:
            columns.append(col)
        rows.setdefault(tuple(str(getattr(r, f)) for f in row_fields), {})[col] = r
    body = [[*key, *(cell(cells.get(c)) for c in columns)] for key, cells in rows.items()]
    return markdown_table([*row_fields, *columns], body)


def _header(records: Sequence[Record]) -> list[str]:
    """Device, versions, commit, command and date of the records (each distinct value once)."""
    lines = []
    for field in ("device", "versions", "commit", "command", "date"):
        seen: list[str] = []
        for r in records:
            v = getattr(r, field)
            text = ", ".join(f"{k} {x}" for k, x in v.items()) if isinstance(v, dict) else str(v)
            if text and text not in seen:
                seen.append(text)
        if seen:
            shown = [f"`{s}`" if field == "command" else s for s in seen[:3]]
            more = f" (and {len(seen) - 3} more)" if len(seen) > 3 else ""
            lines.append(f"- {field}: {'; '.join(shown)}{more}")
    return lines


def write_json(records: Sequence[Record], path: Path, meta: Mapping[str, Any] | None = None) -> Path:
    """The records as JSON: ``{"schema", "meta", "records"}`` (read back with ``load_records``)."""
    data = {"schema": SCHEMA, "meta": dict(meta or {}), "records": [r.to_dict() for r in records]}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
    return Path(path)


def write_csv(records: Sequence[Record], path: Path) -> Path:
    """The records as CSV, one row per record; ``versions`` and ``extra`` as JSON text."""
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(Record.__dataclass_fields__))
        w.writeheader()
        for r in records:
            row = r.to_dict()
            row["versions"] = json.dumps(row["versions"], sort_keys=True)
            row["extra"] = json.dumps(row["extra"], sort_keys=True)
            w.writerow(row)
    return Path(path)


def write_records(
    records: Sequence[Record],
    out_dir: Path,
    stem: str,
    *,
    title: str,
    formats: Sequence[str] = ("json", "csv", "md"),
    notes: Sequence[str] = (),
    table: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``records`` as ``<stem>.json`` (the data: schema, meta, records), ``.csv`` (one row
    per record, versions and extra as JSON text) and ``.md`` (title, environment, notes, then
    ``table``, by default :func:`records_table`). Returns the paths written, by format."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    unknown = set(formats) - {"json", "csv", "md"}
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}: json, csv, md")
    if "json" in formats:
        written["json"] = write_json(records, out_dir / f"{stem}.json", meta)
    if "csv" in formats:
        written["csv"] = write_csv(records, out_dir / f"{stem}.csv")
    if "md" in formats:
        path = out_dir / f"{stem}.md"
        lines = [f"# {title}", "", *_header(records)]
        if notes:
            lines += ["", *notes]
        lines += ["", table if table is not None else records_table(records), ""]
        path.write_text("\n".join(lines))
        written["md"] = path
    return written


def plot(
    path: Path,
    panels: Sequence[Mapping[str, Any]],
    title: str = "",
    figsize: tuple[float, float] | None = None,
) -> bool:
    """One PNG of side-by-side panels; returns False (and says so) without matplotlib.

    Each panel: ``series`` ``{label: {"x": [...], "y": [...], "yerr": [...] or [[lo...], [hi...]]
    (optional), "labels": [...] (optional point annotations)}}``, and optional ``xlabel``,
    ``ylabel``, ``title``, ``logx``, ``logy``, ``kind`` (``"points"``, default, or ``"bar"``: one
    bar group per x label, one bar per series).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    figsize = figsize or (5.5 * len(panels), 4.6)
    fig, axes = plt.subplots(1, len(panels), figsize=figsize, squeeze=False)
    markers = "os^Dv<>p*h"
    for ax, panel in zip(axes[0], panels, strict=True):
        series = panel["series"]
        if panel.get("kind") == "bar":
            labels = list(dict.fromkeys(x for s in series.values() for x in s["x"]))
            width = 0.8 / max(1, len(series))
            for i, (name, s) in enumerate(series.items()):
                pos = [labels.index(x) + (i - (len(series) - 1) / 2) * width for x in s["x"]]
                ax.bar(pos, s["y"], width, yerr=s.get("yerr"), capsize=3, label=name)
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=7)
        else:
            for i, (name, s) in enumerate(series.items()):
                ax.errorbar(
                    s["x"], s["y"], yerr=s.get("yerr"), marker=markers[i % len(markers)], linestyle="none",
                    capsize=3, label=name,
                )  # fmt: skip
                for x, y, text in zip(s["x"], s["y"], s.get("labels") or [], strict=False):
                    ax.annotate(text, (x, y), fontsize=6, alpha=0.7)
        ax.set(
            xlabel=panel.get("xlabel", ""),
            ylabel=panel.get("ylabel", ""),
            title=panel.get("title", ""),
            xscale="log" if panel.get("logx") else "linear",
            yscale="log" if panel.get("logy") else "linear",
        )
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a panel with no finished series has none
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 160), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True
