"""benchmarks/bench_layer.py --smoke on CPU: the GPU benchmark script runs end to end (both Triton
strategies checked against fp64, JSON and markdown written) before any GPU time is spent on it.
Its timings under the interpreter mean nothing and are not looked at."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke mode is the CPU path of the script")
def test_bench_layer_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_layer", REPO / "benchmarks" / "bench_layer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_float32_matmul_precision("highest")
    data = json.loads((tmp_path / "bench_layer_smoke.json").read_text())
    rows = data["layer"]
    for provider in bench.PROVIDERS:
        for mode in bench.MODES:
            assert "median_ms" in rows[f"8x16x8x5|fp32|{mode}|{provider}"], (provider, mode)
    for provider in bench.TRITON_PROVIDERS:
        assert rows[f"8x16x8x5|fp32|fwd+bwd|{provider}"]["rel_err_vs_fp64"] < 1e-5
    md = (tmp_path / "bench_layer_smoke.md").read_text()
    assert "| 8x16x8x5 | fp32 | fwd+bwd |" in md
    assert "median_ms" in data["training"][f"{bench.training_step_name('torch')}|fp32"]
    # The CUDA-graph training steps (GPU only) have names of their own and refuse a CPU device.
    names = {bench.training_step_name(kind) for kind in bench.TRAINING_KINDS}
    assert len(names) == len(bench.TRAINING_KINDS)
    with pytest.raises(RuntimeError, match="CUDA graphs"):
        bench.measure_training_step("mlp+graph", torch.device("cpu"), "fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke mode is the CPU path of the script")
def test_profile_layer_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("profile_layer", REPO / "benchmarks" / "profile_layer.py")
    prof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prof)
    assert prof.main(["--smoke", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "profile_8x16x8x5_bf16.txt").read_text()
    for provider in ("fused", "chunked", "floor"):
        assert f"== {provider}" in report
        assert (tmp_path / f"profile_8x16x8x5_bf16_{provider}.json").stat().st_size > 0
    assert "failed" not in report


def test_kernel_resources_knows_every_integer_argument():
    """kernel_resources.py specializes each kernel like a launch on contiguous tensors; it needs a
    value for every integer argument (a new one would raise only when its GPU compile runs)."""
    import inspect

    pytest.importorskip("triton.backends.nvidia")
    spec = importlib.util.spec_from_file_location(
        "kernel_resources", REPO / "benchmarks" / "kernel_resources.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernels = [module._kan_fwd_kernel, module._kan_bwd_dx_kernel, module._kan_bwd_dw_kernel]
    kernels += [getattr(module.kan_chunked, n) for n in ("_kan_expand_kernel", "_kan_dx_reduce_kernel",
                                                         "_kan_pack_kernel", "_kan_unpack_kernel")]  # fmt: skip
    for kernel in kernels:
        params = inspect.signature(kernel.fn).parameters.values()
        integers = [
            p.name for p in params if not p.name.endswith("_ptr") and "constexpr" not in str(p.annotation)
        ]
        assert integers, kernel.fn.__name__
        ints = module.contiguous_launch_ints(12, 8, kernel.fn.__name__)
        missing = [n for n in integers if n not in ints]
        assert not missing, (kernel.fn.__name__, missing)


def test_gpu_session_script_plans_stages_within_budget(tmp_path):
    """benchmarks/gpu_session.sh (run on the GPU machine only) parses its stages and hands each
    the time left; GPU_SESSION_DRY=1 prints the commands instead of running them."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"
    env = {**os.environ, "GPU_SESSION_DRY": "1", "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(script), "check", "bench:bf16", "profile:64x784x64x5", "mnist:mnist-5k"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DRY: ")]
    assert any("pytest" in line and "tests/test_kernels.py" in line for line in lines)
    assert any("bench_layer.py --precisions bf16" in line and "--max-minutes 8.5" in line for line in lines)
    assert any("profile_layer.py" in line and "--shape 64x784x64x5" in line for line in lines)
    assert any("mnist_table.py --dataset mnist-5k" in line for line in lines)
    bad = subprocess.run(
        ["bash", str(script), "bench:fp16"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    short = subprocess.run(
        ["bash", str(script), "check"], env={**env, "GPU_SESSION_MINUTES": "0.5"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 0 and "skipped" in short.stdout and "DRY:" not in short.stdout
