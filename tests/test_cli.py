"""``efficient-kan check`` and ``efficient-kan bench`` (also as ``python -m efficient_kan``), on CPU:
the check runs the Triton kernels in the interpreter; the benchmark runs tiny models briefly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from efficient_kan import cli
from efficient_kan.bench import load_records
from efficient_kan.bench.models import _preset_filter, variants

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_check_quick_passes_and_prints_report(capsys):
    assert cli.main(["check", "--quick", "--min-run-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and f"torch {torch.__version__}" in out and "triton" in out
    assert "strategy = " in out and "chunk_bytes = " in out  # settings().describe()
    assert "PASS: 8 of 8 checks passed" in out and "paste this into a bug report" in out
    assert "fp16 chunked" in out and "fp64 fused" in out
    assert "| 64x784x64x5 |" in out  # timed against nn.Linear and the floor


def test_check_fails_with_exit_1_and_names_the_gradient(monkeypatch, capsys):
    """A wrong input gradient on the Triton path is a FAIL, named in the bug-report block."""
    import efficient_kan.triton_backend as tb

    real = tb.kan_linear_triton

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 1.5

    def broken(x, *args, **kwargs):
        return real(Wrong.apply(x) if x.requires_grad else x, *args, **kwargs)

    monkeypatch.setattr(tb, "kan_linear_triton", broken)
    assert cli.main(["check", "--quick", "--no-timing"]) == 1
    out = capsys.readouterr().out
    report = out.split("paste this into a bug report")[1]
    assert "FAIL: 0 of 8 checks passed" in report and "failed: 9x5x7 G=5 K=3" in report and "dx:" in report


def test_bench_mlp_and_kan_specs_write_json_csv_plot(tmp_path, capsys):
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "png")}
    argv = ["bench", "mlp:16,8,4", "--batch", "4", "--quick", "--json", str(paths["json"]),
            "--csv", str(paths["csv"]), "--plot", str(paths["png"])]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for text in ("device: CPU", "torch threads", "command: efficient-kan bench mlp:16,8,4", "date:"):
        assert text in out, text
    # params: MLP 16*8+8 + 8*4+4 = 172; kanify: 2 KANLinear (in*out*(G+K+2) + out) = 16*8*10+8 + 8*4*10+4
    assert "| original | 172 | 0 | fp32 |" in out
    assert "| kanify | 1,612 | 1,612 | fp32 |" in out
    assert "| kanify:mlp-blocks | 1,324 | 1,288 |" in out  # the hidden layer only; the head stays
    assert "kanify:head" in out and "mlp-matched (MLP 16-" in out
    records = load_records(paths["json"])
    metrics = {r.metric for r in records}
    assert {"params", "params converted", "fwd samples/s", "fwd+bwd samples/s", "fwd+bwd peak MiB"} <= metrics
    rate = next(r for r in records if r.metric == "fwd samples/s")
    assert 0 < rate.p20 <= rate.p50 <= rate.p80
    assert paths["csv"].read_text().startswith("benchmark,") and paths["png"].stat().st_size > 0
    assert (
        cli.main(["bench", "kan:16,8,4", "--batch", "2", "--quick", "--variants", "original", "mlp-matched"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "| original | 1,600 | 1,600 |" in out
        and "mlp-matched (MLP 16-76-4, ~KAN params) | 1,600 | 0 |" in out
    )


def test_presets_pick_head_and_mlp_blocks():
    from torch import nn

    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), nn.Linear(8, 2)
    )
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = _preset_filter("head", model)
    blocks = _preset_filter("mlp-blocks", model)
    assert [n for n in names if head(None, n)] == ["3"]
    assert [n for n in names if blocks(None, n)] == ["0", "2.0", "2.1"]  # the root holds "0" and "3"
    with pytest.raises(ValueError, match="unknown preset"):
        _preset_filter("attention", model)
    found, notes, _ = variants("mlp:4,3", ["original", "kanify", "kanify:head", "kanify:mlp-blocks"])
    assert [v.name for v in found] == ["original", "kanify"]
    assert any("same layers as kanify" in n for n in notes) and any("matches" in n for n in notes)


def test_bench_errors_are_one_line(capsys):
    assert cli.main(["bench", "no_such_model_xyz"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli.main(["bench", "json:JSONDecoder"]) == 2
    assert "not an nn.Module" in capsys.readouterr().err
    assert cli.main(["bench", "json:dumps"]) == 2
    assert "json:dumps() raised TypeError" in capsys.readouterr().err


def test_bench_resnet18_subprocess(tmp_path):
    """The README's command at a tiny input, from a fresh process through ``python -m``."""
    pytest.importorskip("torchvision")
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "efficient_kan", "bench", "resnet18", "--input", "3,32,32", "--batch", "2",
           "--quick", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| original | 11,689,512 | 0 |" in proc.stdout
    assert "| kanify | " in proc.stdout and "kanify:head: converts the same layers as kanify" in proc.stdout
    assert "mlp-blocks: no nn.Linear layer of this model matches" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "efficient_kan.bench/1"
    exe = shutil.which("efficient-kan")
    if exe:  # installed with pip: the console script is the same entry point
        shown = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120, env=_env())
        assert shown.returncode == 0 and "check" in shown.stdout and "bench" in shown.stdout
