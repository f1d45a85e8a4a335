"""The benchmark harness: one way to time, one record schema, one writer, one plot.

- :mod:`.timing`: :func:`~.timing.time_fn` (``triton.testing.do_bench`` on CUDA,
  ``torch.utils.benchmark.Timer.blocked_autorange`` on CPU) returns a :class:`~.timing.Timing` with
  the 20/50/80 % quantiles in milliseconds; :func:`~.timing.time_interleaved` times several
  callables against each other in rounds (thread CPU time on one thread), for ratios on a loaded
  CPU; :func:`~.timing.peak_memory_mib` measures one call.
- :mod:`.records`: :class:`~.records.Record` (benchmark, provider, shape, dtype, metric,
  p20/p50/p80, device, versions, commit, command, date) and :func:`~.records.environment`.
- :mod:`.report`: JSON/CSV/markdown writing of records, a generic markdown table, and
  :func:`~.report.plot`.

Every script in ``benchmarks/`` and ``efficient-kan bench`` uses these.
"""

from .records import Record, environment, load_records, merge_records
from .report import (
    format_quantiles,
    markdown_table,
    plot,
    records_table,
    write_csv,
    write_json,
    write_records,
)
from .timing import Timing, peak_memory_mib, time_fn, time_interleaved

__all__ = [
    "Record",
    "Timing",
    "environment",
    "format_quantiles",
    "load_records",
    "markdown_table",
    "merge_records",
    "peak_memory_mib",
    "plot",
    "records_table",
    "time_fn",
    "time_interleaved",
    "write_csv",
    "write_json",
    "write_records",
]
