"""The vision side of the training engine: --arch cnn|vit, --kan placement, the CLI derived from
TrainConfig, CIFAR-10's message, and the vision table script (a tiny smoke run)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

import train_mnist
from efficient_kan import KANLinear
from efficient_kan.data import DatasetUnavailable, load_dataset
from efficient_kan.training import ConfigError, TrainConfig, build_vision_model, count_parameters

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "mnist-5k", "--train-limit", "256", "--test-limit", "200", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kan_names(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, KANLinear)]


# ------------------------------------------------------------------------------- CLI = dataclass
def test_cli_defaults_are_the_dataclass_defaults():
    cfg = train_mnist.config_from_args(train_mnist.build_parser().parse_args([]), [])
    assert dataclasses.replace(cfg, command="") == TrainConfig()


def test_every_config_field_with_cli_metadata_is_a_flag():
    actions = {a.dest: a for a in train_mnist.build_parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        assert ("cli" in f.metadata) == (f.name in actions), f.name
    assert actions["download"].option_strings == ["--offline"]


@pytest.mark.parametrize(
    "field, value, fragment", [("epochs", 0, "must be >= 1"), ("lr", -1.0, "must be a positive number")]
)
def test_one_rule_for_flags_and_configs_built_in_code(capsys, field, value, fragment):
    with pytest.raises(ConfigError, match=f"--{field} {fragment}"):
        TrainConfig(**{field: value}).validate()
    with pytest.raises(SystemExit):
        train_mnist.main([f"--{field}", str(value)])
    assert fragment in capsys.readouterr().err


# ----------------------------------------------------------------------------------- KAN placement
@pytest.mark.parametrize(
    "arch, place, expected",
    [
        ("cnn", "head", ["head"]),
        ("cnn", "mlp-blocks", ["mlp.0"]),
        ("cnn", "all", ["mlp.0", "head"]),
        ("vit", "head", ["1.heads.head"]),
        (
            "vit",
            "mlp-blocks",
            [f"1.encoder.layers.encoder_layer_{i}.mlp.{j}" for i in (0, 1) for j in (0, 3)],
        ),
        ("vit", "none", []),
    ],
)
def test_kan_places_select_exactly_those_linears(arch, place, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no kanify warning about attention's out_proj either
        model = build_vision_model(arch, (1, 28, 28), kan=place)
    assert _kan_names(model) == expected
    assert model(torch.randn(3, 784)).shape == (3, 10)


def test_unknown_kan_place_is_a_config_error():
    with pytest.raises(ConfigError, match="mlp-blocks"):
        build_vision_model("cnn", (1, 28, 28), kan="heads")


def test_vit_all_is_head_and_mlp_blocks_and_cifar_shapes_work():
    model = build_vision_model("vit", (3, 32, 32), kan="all")
    assert len(_kan_names(model)) == 5
    assert model(torch.randn(2, 3072)).shape == (2, 10)
    cnn = build_vision_model("cnn", (3, 32, 32), kan="none", hidden=32)
    assert (
        count_parameters(cnn)
        == count_parameters(build_vision_model("cnn", (1, 28, 28), hidden=32)) + 2 * 9 * 16
    )


# --------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("arch, place", [("cnn", "head"), ("vit", "mlp-blocks")])
def test_cli_trains_vision_models(tmp_path, arch, place):
    out = tmp_path / "r.json"
    argv = ["--arch", arch, "--kan", place, "--epochs", "3", "--lr", "3e-3", "--json", str(out)]
    results = train_mnist.main(SMALL + argv + ["--train-limit", "1024"])
    expected = build_vision_model(arch, (1, 28, 28), kan=place)
    assert results["params"] == count_parameters(expected) and results["arch"] == arch
    assert results["kan"] == place and results["grid_size"] == 5 and results["widths"] is None
    assert results["test_accuracy"] > 0.3  # chance is 0.1; 1,024 digits, 3 epochs
    assert json.loads(out.read_text())["params"] == results["params"]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--arch", "cnn", "--widths", "784,8,10"], "--arch cnn uses --kan"),
        (["--kan", "head"], "need --arch cnn or vit"),
        (["--arch", "vit", "--kan", "head", "--update-grid-every", "2"], "needs --model kan"),
        (["--dataset", "cifar10", "--widths", "784,10"], "must start with 3072"),
    ],
)
def test_bad_vision_combinations_give_one_line(argv, fragment):
    with pytest.raises(SystemExit) as info:
        train_mnist.main(["--device", "cpu", *argv])
    message = str(info.value.code)
    assert message.startswith("error:") and fragment in message and "\n" not in message


def test_checkpoint_of_another_arch_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    train_mnist.main(SMALL + ["--arch", "cnn", "--epochs", "1", "--save", str(ckpt)])
    with pytest.raises(SystemExit, match="has arch=cnn but this run asks for arch=vit"):
        train_mnist.main(SMALL + ["--arch", "vit", "--epochs", "2", "--save", str(ckpt), "--resume"])


def test_cifar10_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-py") as info:
        load_dataset("cifar10", tmp_path, log=None)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ the table
def _load_table():
    spec = importlib.util.spec_from_file_location("vision_table", REPO / "benchmarks" / "vision_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vision_table_parameter_matched_rows():
    table = _load_table()
    for arch in ("cnn", "vit"):
        for place in ("head", "mlp-blocks"):
            kan = count_parameters(build_vision_model(arch, (1, 28, 28), kan=place))
            hidden = table.matched_hidden(arch, kan)
            mlp = count_parameters(build_vision_model(arch, (1, 28, 28), hidden=hidden))
            assert abs(mlp - kan) / kan < 0.02, (arch, place, hidden, mlp, kan)


def test_vision_table_smoke(tmp_path, monkeypatch, capsys):
    table = _load_table()
    monkeypatch.setattr(table._output, "FRESH_ROOT", tmp_path / "bench-out")
    argv = ["--dataset", "mnist-5k", "--epochs", "1", "--seeds", "0", "--arch", "cnn", "--isolate", "none"]
    argv += ["--train-limit", "64", "--test-limit", "50", "--device", "cpu"]
    table.main(argv)
    (out,) = (tmp_path / "bench-out").iterdir()
    md = (out / "vision_mnist-5k_cpu.md").read_text()
    assert "| CNN | KAN head |" in md and "## What it shows" in md and "Command:" in md
    data = json.loads((out / "vision_mnist-5k_cpu.json").read_text())
    assert len(data["runs"]) == 5 and {r["arch"] for r in data["runs"]} == {"cnn"}
    assert (out / "vision_mnist-5k_cpu.png").stat().st_size > 0
