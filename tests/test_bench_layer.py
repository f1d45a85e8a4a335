"""benchmarks/bench_layer.py --smoke on CPU: the GPU benchmark script runs end to end (both Triton
strategies checked against fp64, JSON and markdown written) before any GPU time is spent on it.
Its timings under the interpreter mean nothing and are not looked at.

Also the rules every benchmark script keeps: a run writes into benchmarks/results/ (the committed
results) only when told to (--publish or --out), by default into a new folder under bench-out/; and
every option's --help shows its default."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def script_path(name: str) -> Path:
    """``benchmarks/<name>.py``, or ``tools/<name>.py`` for the device-session tooling."""
    path = REPO / "benchmarks" / f"{name}.py"
    return path if path.exists() else REPO / "tools" / f"{name}.py"


def load_script(name: str):
    """``benchmarks/<name>.py`` or ``tools/<name>.py`` as a fresh module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(name, script_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_module():
    """The ``benchmarks/_output.py`` helper module, the one instance the scripts import."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("_output")


def results_snapshot() -> dict[str, tuple[int, str]]:
    """Every file under benchmarks/results/: modification time and content hash."""
    return {
        str(f.relative_to(RESULTS)): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(RESULTS.rglob("*"))
        if f.is_file()
    }


@pytest.fixture
def fresh_root(tmp_path, monkeypatch):
    """Where the scripts' default output folders go during a test (instead of the checkout's
    bench-out/), and a check that benchmarks/results/ is left exactly as it was."""
    root = tmp_path / "bench-out"
    monkeypatch.setattr(output_module(), "FRESH_ROOT", root)
    before = results_snapshot()
    yield root
    assert results_snapshot() == before, "a run without --publish/--out changed benchmarks/results/"


def only_folder(root: Path, script: str) -> Path:
    folders = list(root.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith(f"{script}-"), folders
    return folders[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke mode is the CPU path of the script")
def test_bench_layer_smoke(fresh_root, capsys):
    bench = load_script("bench_layer")
    try:
        assert bench.main(["--smoke"]) == 0  # default output: a new folder, never benchmarks/results
    finally:
        torch.set_float32_matmul_precision("highest")
    out = only_folder(fresh_root, "bench_layer")
    assert str(out) in capsys.readouterr().out
    from efficient_kan.bench import load_records

    records = {r.key(): r for r in load_records(out / "bench_layer_smoke.json")}
    for provider in bench.PROVIDERS:
        for mode in bench.MODES:
            r = records[("bench_layer", provider, "8x16x8x5", "fp32", f"{mode} ms")]
            assert r.ok and r.p20 <= r.p50 <= r.p80 and r.command and r.versions["torch"], (provider, mode)
    for provider in bench.TRITON_PROVIDERS:
        assert records[("bench_layer", provider, "8x16x8x5", "fp32", "fwd+bwd rel_err")].p50 < 1e-5
    md = (out / "bench_layer_smoke.md").read_text()
    assert "| 8x16x8x5 | fp32 | fwd+bwd |" in md
    assert (out / "bench_layer_smoke.csv").read_text().startswith("benchmark,provider,shape,dtype,metric")
    step = ("bench_layer", bench.training_step_name("torch"), "batch 64", "fp32", "step ms")
    assert records[step].ok
    # The CUDA-graph training steps (GPU only) have names of their own and refuse a CPU device.
    names = {bench.training_step_name(kind) for kind in bench.TRAINING_KINDS}
    assert len(names) == len(bench.TRAINING_KINDS)
    with pytest.raises(RuntimeError, match="CUDA graphs"):
        bench.measure_training_step("mlp+graph", torch.device("cpu"), "fp32", {})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke mode is the CPU path of the script")
def test_profile_layer_smoke(fresh_root, capsys):
    prof = load_script("profile_layer")
    assert prof.main(["--smoke"]) == 0  # default output: a new folder, never benchmarks/results
    out = only_folder(fresh_root, "profile_layer")
    assert str(out) in capsys.readouterr().out
    report = (out / "profile_8x16x8x5_bf16.txt").read_text()
    for provider in ("fused", "chunked", "floor"):
        assert f"== {provider}" in report
        assert (out / f"profile_8x16x8x5_bf16_{provider}.json").stat().st_size > 0
    assert "failed" not in report


def test_output_folder_rules(fresh_root, tmp_path):
    """Default: a new folder per run under bench-out/ (two runs in the same second get two);
    --out DIR: that folder; --publish: exactly benchmarks/results/, and it excludes --out. Smoke
    results are never published."""
    output = output_module()
    parser = argparse.ArgumentParser()
    output.add_out_arguments(parser, "demo", publish=True, existing="kept")
    first, fresh = output.resolve_out(parser.parse_args([]), "demo")
    second, _ = output.resolve_out(parser.parse_args([]), "demo")
    assert fresh and first != second and first.parent == second.parent == fresh_root
    assert first.name.startswith("demo-") and not any(first.iterdir())
    chosen = tmp_path / "chosen" / "deeper"
    assert output.resolve_out(parser.parse_args(["--out", str(chosen)]), "demo") == (chosen, False)
    assert chosen.is_dir()
    assert output.resolve_out(parser.parse_args(["--publish"]), "demo") == (RESULTS, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--publish", "--out", str(chosen)])
    with pytest.raises(SystemExit):
        load_script("bench_layer").main(["--smoke", "--publish"])


# The Python benchmark scripts (benchmarks/) and device-session tools (tools/) with a command line.
SCRIPTS = (
    "bench_cpu_layer",
    "bench_layer",
    "compile_only",
    "host_overhead",
    "kernel_resources",
    "mnist_table",
    "profile_layer",
    "pykan_flow",
    "vision_table",
)
TOOLS = ("compile_only", "host_overhead", "kernel_resources")


def test_every_benchmark_script_is_covered():
    found = {p.stem for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert found == set(SCRIPTS) - set(TOOLS)
    assert {p.stem for p in (REPO / "tools").glob("*.py")} == set(TOOLS)
    assert (REPO / "tools" / "gpu_session.sh").is_file()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_shows_help_and_default(name):
    """``--help`` of each script explains every option and shows its default."""
    pytest.importorskip("triton.backends.compiler")
    parser = load_script(name).build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert text and "(default:" in text, (name, action.option_strings, text)
    assert "(default:" in parser.format_help()


def test_kernel_resources_knows_every_integer_argument():
    """kernel_resources.py specializes each kernel like a launch on contiguous tensors; it needs a
    value for every integer argument (a new one would raise only when its GPU compile runs)."""
    import inspect

    pytest.importorskip("triton.backends.nvidia")
    module = load_script("kernel_resources")
    kernels = [module._kan_fwd_kernel, module._kan_bwd_dx_kernel, module._kan_bwd_dw_kernel]
    kernels += [getattr(module.chunked, n) for n in ("_kan_expand_kernel", "_kan_dx_reduce_kernel",
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
    """tools/gpu_session.sh (run on the GPU machine only) parses its stages and hands each
    the time left; GPU_SESSION_DRY=1 prints the commands instead of running them."""
    import os
    import subprocess

    script = REPO / "tools" / "gpu_session.sh"
    env = {**os.environ, "GPU_SESSION_DRY": "1", "OUT": str(tmp_path)}
    stages = ["check", "tests", "bench:bf16", "profile:64x784x64x5", "mnist:mnist-5k"]
    proc = subprocess.run(["bash", str(script), *stages], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DRY: ")]
    assert any("python -m efficient_kan check" in line for line in lines)
    assert any("pytest" in line and "tests/test_kernels.py" in line for line in lines)
    assert any("bench_layer.py --precisions bf16" in line and "--max-minutes 6.5" in line for line in lines)
    assert any("profile_layer.py" in line and "--shape 64x784x64x5" in line for line in lines)
    assert any("mnist_table.py --dataset mnist-5k" in line for line in lines)
    # Without --publish nothing goes to benchmarks/results: every writer is told the session folder.
    writers = [line for line in lines if "benchmarks/" in line]
    assert len(writers) == 3 and all(f"--out {tmp_path}" in line for line in writers), writers
    assert not any("--publish" in line for line in lines)
    # The one-run plan: check first, then the target shapes in bf16 and TF32 (first config), the
    # batch-64 training step, one MNIST row; each stage capped so all fit the 7-minute default.
    plan = subprocess.run(["bash", str(script), "plan"], env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = [line for line in plan.stdout.splitlines() if line.startswith("DRY: ")]
    assert len(lines) == 5 and "efficient_kan check" in lines[0] and "timeout 150" in lines[0], lines
    for line, precision in zip(lines[1:3], ("bf16", "tf32"), strict=True):
        assert f"--precisions {precision} --shapes targets --modes fwd+bwd" in line, line
        assert "EFFICIENT_KAN_AUTOTUNE=0 timeout 100" in line, line
    assert "--training-only" in lines[3] and "timeout 60" in lines[3]
    assert "--dataset mnist-5k --rows 784,64,10" in lines[4]
    caps = 150 + 100 + 100 + 60
    assert caps < 7 * 60  # the MNIST row gets the rest of the default budget
    bench = load_script("bench_layer")
    assert [bench.shape_key(s) for s in bench.TARGET_SHAPES] == [
        "4096x1024x1024x5", "16384x1024x1024x5", "4096x512x512x20", "65536x64x64x5"
    ]  # fmt: skip
    # The plan passes --publish: bench and mnist write the committed results; the profiles and the
    # test log still go to the session folder (--out here, over $OUT).
    session = tmp_path / "session"
    published = subprocess.run(
        ["bash", str(script), "--publish", "--out", str(session), *stages],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    lines = [line for line in published.stdout.splitlines() if line.startswith("DRY: ")]
    for what in ("bench_layer.py", "mnist_table.py"):
        assert any(what in line and "--publish" in line and "--out" not in line for line in lines), what
    assert any("profile_layer.py" in line and f"--out {session}" in line for line in lines)
    assert session.is_dir()
    header = script.read_text().split("set -euo")[0]
    plan = [line for line in header.splitlines() if "bash tools/gpu_session.sh" in line]
    assert plan and all("--publish" in line for line in plan), plan
    assert "Cut from that run" in header
    # --help shows every option and variable with its default.
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "usage:" in shown.stdout
    entries: list[str] = []  # an entry starts at two spaces of indent; deeper lines continue it
    for line in shown.stdout.split("options:")[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            entries.append(line)
        elif line.startswith("   ") and entries:
            entries[-1] += " " + line.strip()
    names = [e.split()[0] for e in entries]
    assert {"--out", "--publish", "GPU_SESSION_MINUTES", "GPU_SESSION_DRY"} <= set(names), names
    for entry in entries:
        assert entry.strip().startswith("-h") or "(default:" in entry, entry
    bad = subprocess.run(
        ["bash", str(script), "targets:fp16"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    short = subprocess.run(
        ["bash", str(script), "check"], env={**env, "GPU_SESSION_MINUTES": "0.5"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 0 and "skipped" in short.stdout and "DRY:" not in short.stdout


_PRINT_ONLY_TRIALS = """
import sys
sys.path.insert(0, "tools")
import compile_only, host_overhead, kernel_resources
assert compile_only.main(["--no-autotune", "--steps", "1x3x5x5:fp32:chunked"]) == 0
assert kernel_resources.main(["--kinds", "pack", "--shapes", "G5K3", "--dtype", "fp32"]) == 0
assert host_overhead.main(["--calls", "10", "--rounds", "1"]) == 0  # last: it stubs Triton's launches
"""


@pytest.mark.slow
def test_print_only_scripts_write_no_results():
    """compile_only.py, kernel_resources.py and host_overhead.py print their findings and write no
    files (compile_only.py fills a new temporary Triton cache): a tiny trial run of each leaves
    benchmarks/results/ as it was. A subprocess: they compile for sm_90 or stub the launcher, which
    needs Triton without its interpreter."""
    import os
    import subprocess

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    before = results_snapshot()
    proc = subprocess.run(
        [sys.executable, "-c", _PRINT_ONLY_TRIALS], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failures" in proc.stdout and "pack" in proc.stdout and "F.linear" in proc.stdout
    assert results_snapshot() == before


def test_harness_times_records_and_writes(tmp_path):
    """efficient_kan.bench: CPU timing gives ordered quantiles from torch.utils.benchmark; records
    carry the environment and come back from JSON unchanged; CSV and markdown are written; a JSON of
    another format is refused by name."""
    from efficient_kan.bench import Record, environment, load_records, merge_records, time_fn, write_records

    x = torch.randn(64, 64)
    t = time_fn(lambda: x @ x, "cpu", min_run_time=0.01, warmup=1)
    assert 0 < t.p20 <= t.p50 <= t.p80 and "torch.utils.benchmark" in t.method and t.samples >= 1
    env = environment("cpu", ["python", "demo.py", "--flag"])
    assert env["command"] == "python demo.py --flag" and env["versions"]["torch"] == torch.__version__
    assert env["device"].startswith("CPU") and env["date"]
    a = Record.of(env, benchmark="demo", provider="mm", shape="64x64", dtype="fp32", metric="ms",
                  p20=t.p20, p50=t.p50, p80=t.p80, unit="ms")  # fmt: skip
    b = Record.of(env, benchmark="demo", provider="mm", shape="64x64", dtype="fp32", metric="MiB", value=1.5)
    c = Record.of(env, benchmark="demo", provider="bad", shape="64x64", dtype="fp32", metric="ms", error="E")
    paths = write_records([a, b, c], tmp_path, "demo", title="demo")
    assert load_records(paths["json"]) == [a, b, c]
    assert len(paths["csv"].read_text().splitlines()) == 4
    md = paths["md"].read_text()
    assert "# demo" in md and "`python demo.py --flag`" in md and "| 64x64 | fp32 | MiB | 1.500 | - |" in md
    newer = Record.of(
        env, benchmark="demo", provider="mm", shape="64x64", dtype="fp32", metric="MiB", value=2.0
    )
    assert merge_records([a, b], [newer]) == [a, newer]
    old = tmp_path / "old.json"
    old.write_text('{"layer": {}, "training": {}}')
    with pytest.raises(ValueError, match="old.json is not"):
        load_records(old)


def test_time_interleaved_rounds_and_clocks():
    """Every callable is called once per round (after its warm-up calls); quantiles are ordered;
    one torch thread means the thread-CPU clock."""
    from efficient_kan.bench import time_interleaved

    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
            torch.randn(32, 32) @ torch.randn(32, 32)

        return fn

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        res = time_interleaved({"a": make("a"), "b": make("b")}, 7, warmup=2)
    finally:
        torch.set_num_threads(before)
    assert calls == {"a": 9, "b": 9}
    for t in res.values():
        assert 0 <= t.p20 <= t.p50 <= t.p80 and t.samples == 7 and "thread clock" in t.method
    assert "wall clock" in time_interleaved({"a": make("a")}, 1, warmup=0, clock="wall")["a"].method
    with pytest.raises(ValueError, match="clock"):
        time_interleaved({"a": make("a")}, 1, clock="cpu")


def test_bench_cpu_layer_smoke(fresh_root):
    """bench_cpu_layer.py --smoke: every provider timed, records in the harness's schema, tables."""
    from efficient_kan.bench import load_records

    bench = load_script("bench_cpu_layer")
    before = torch.get_num_threads()
    try:
        bench.main(["--smoke", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    out = only_folder(fresh_root, "bench_cpu_layer")
    (json_path,) = out.glob("cpu_layer_*.json")
    records = load_records(json_path)
    assert {r.provider for r in records} >= {"ours", "reference", "cox-de-boor", "floor", "mlp"}
    assert {r.metric for r in records} >= {"forward (1t)", "forward+backward (1t)", "training steps/s (1t)"}
    assert all(r.ok and r.benchmark == "bench_cpu_layer" for r in records)
    md = json_path.with_suffix(".md").read_text()
    assert "| 1 | 8, 12 -> 6, G5 | forward |" in md and "ours / reference" in md
    assert "inference_mode (1t)" in {r.metric for r in records} and "| 1, 12 -> 6, G5 |" in md
    assert "ours, frozen weights" in {r.provider for r in records}
