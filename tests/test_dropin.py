"""kanify as a true drop-in: a model zoo, the patterns that used to crash, and model-level tools.

Every zoo model is converted with ``init="linear"`` in float64 and must compute exactly what it
computed before (the linears it must skip stay nn.Linear), then train (forward + backward) and run
in eval under ``no_grad`` (where torch's inference fast paths are taken).
"""

from __future__ import annotations

import copy
import socket
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efficient_kan import (
    KAN,
    KANLinear,
    calibrate,
    kanify,
    regularization_loss,
    update_grids,
)
from efficient_kan.convert import direct_weight_reads, kan_parameter_count

from .utils import assert_close


def _torchvision():
    # Imported where used, so that the distributed test's worker processes do not pay for it.
    return pytest.importorskip("torchvision")


@pytest.fixture(autouse=True)
def _one_thread():
    """One CPU thread: these are many tiny ops, and the build machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kanify_quiet(model, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = kanify(model, **kwargs)
    return result, [str(w.message) for w in caught]


# ------------------------------------------------------------------------------------------ zoo
def _vit():
    _torchvision()
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )


def _swin(v2: bool = False):
    _torchvision()
    from torchvision.models import SwinTransformer
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=24,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=[4, 4],
        num_classes=10,
        **extra,
    )


def _maxvit():
    _torchvision()
    from torchvision.models import MaxVit

    return MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[16, 32],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=10,
    )


def _convnext():
    _torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def _transformer():
    return nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=1,
        dim_feedforward=32,
        dropout=0.0,
        batch_first=True,
    )


IMAGE = (2, 3, 32, 32)
# name -> (factory, linears that must stay nn.Linear)
ZOO = {
    "resnet18": (lambda: _torchvision().models.resnet18(num_classes=10), set()),
    "vit": (_vit, {f"encoder.layers.encoder_layer_{i}.self_attention.out_proj" for i in range(2)}),
    "swin": (_swin, {f"features.{s}.0.attn.{n}" for s in (1, 3) for n in ("qkv", "proj")}),
    "swin_v2": (
        lambda: _swin(v2=True),
        {f"features.{s}.0.attn.{n}" for s in (1, 3) for n in ("qkv", "proj")},
    ),
    "maxvit": (_maxvit, set()),
    "convnext": (_convnext, set()),
    "transformer": (
        _transformer,
        {"encoder.layers.0.self_attn.out_proj", "encoder.layers.1.self_attn.out_proj"}
        | {"decoder.layers.0.self_attn.out_proj", "decoder.layers.0.multihead_attn.out_proj"},
    ),
}


def _inputs(name: str, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    if name == "transformer":
        return (
            torch.randn(2, 5, 16, generator=g, dtype=dtype),
            torch.randn(2, 4, 16, generator=g, dtype=dtype),
        )
    return (torch.randn(*IMAGE, generator=g, dtype=dtype),)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_init_linear_keeps_outputs_and_trains(name):
    factory, must_skip = ZOO[name]
    torch.manual_seed(0)
    model = factory().double().eval()
    inputs = _inputs(name)
    with torch.no_grad():
        expected = model(*inputs)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}

    result, messages = _kanify_quiet(model, init="linear")

    # Every linear is either converted or skipped with a reason, and the skips are the expected ones.
    assert set(result) | {n for n, _ in result.skipped} == linears
    assert {n for n, _ in result.skipped} == must_skip
    if must_skip:
        assert len([m for m in messages if "left" in m]) == 1
        assert all(n in messages[-1] for n in must_skip)
    assert all(isinstance(model.get_submodule(n), KANLinear) for n in result)
    assert result.params_after == sum(p.numel() for p in model.parameters())

    with torch.no_grad():  # eval + no_grad: torch's inference fast paths apply here
        assert_close(model(*inputs), expected, atol=1e-10, rtol=1e-10)
    model.train()
    out = model(*inputs)
    out.sum().backward()  # not a square: ViT's head starts at zero, so that would give zero gradients
    kans = [model.get_submodule(n) for n in result]
    assert all(k.spline_weight.grad is not None for k in kans)
    assert sum(k.base_weight.grad.abs().sum() for k in kans) > 0


def test_zoo_default_init_trains_in_float32():
    """The default (fresh KAN) conversion in float32, on one model per kind of block."""
    for name in ("vit", "swin"):
        torch.manual_seed(0)
        model = ZOO[name][0]()
        _kanify_quiet(model)
        out = model(*_inputs(name, torch.float32))
        out.square().mean().backward()
        assert torch.isfinite(out).all()


def test_encoder_fast_paths_turned_off_not_crashing():
    """nn.TransformerEncoder(Layer) in eval + no_grad reads linear1/linear2.weight on its fast
    paths; after kanify those paths are off and the regular path computes the same function."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        expected, expected_masked = enc(x), enc(x, src_key_padding_mask=mask)
    result, _ = _kanify_quiet(enc, init="linear")
    assert {"layers.0.linear1", "layers.1.linear2"} <= set(result)
    assert any("fast path" in note for note in result.notes)
    with torch.no_grad():
        assert_close(enc(x), expected, atol=1e-12, rtol=1e-12)
        # The nested-tensor path zeroes padded positions; compare the real ones.
        keep = ~mask
        assert_close(enc(x, src_key_padding_mask=mask)[keep], expected_masked[keep], atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------- direct weight reads
class _FunctionalProj(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(F.linear(x, self.proj.weight, self.proj.bias))


class _AliasReads(nn.Module):
    """Reads through a local alias, a loop over a ModuleList, getattr, and a helper method."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.c = nn.Linear(4, 4)
        self.d = nn.Linear(4, 4)
        self.called = nn.Linear(4, 4)

    def forward(self, x):
        a = self.a
        x = F.linear(x, a.weight)
        for blk in self.blocks:
            x = x @ blk.weight.t()
        x = F.linear(x, getattr(self.c, "weight"))  # noqa: B009 (the getattr form is the point)
        return self.called(self._helper(x))

    def _helper(self, x):
        return x + self.d.bias


class _Outer(nn.Module):
    """A grandparent reading its grandchild's weight; an init method reading weights is fine."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self._init_weights()

    def _init_weights(self):
        nn.init.zeros_(self.inner[1].bias)

    def forward(self, x):
        return self.inner(x) * self.inner[0].weight.sum()


@pytest.mark.parametrize(
    "module, skipped, converted",
    [
        (_FunctionalProj, {"proj"}, {"fc"}),
        (_AliasReads, {"a", "blocks.0", "blocks.1", "c", "d"}, {"called"}),
        (_Outer, {"inner.0"}, {"inner.1"}),
    ],
)
def test_direct_weight_reads_are_skipped_and_the_rest_converted(module, skipped, converted):
    torch.manual_seed(0)
    model = module().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    expected = model(x)
    result, messages = _kanify_quiet(model, init="linear")
    assert set(result) == converted and {n for n, _ in result.skipped} == skipped
    assert len(messages) == 1 and all(f"  {n}: " in messages[0] for n in skipped)
    assert "reads self." in messages[0]
    assert_close(model(x), expected, atol=1e-12, rtol=1e-12)


def test_direct_weight_reads_reports_torch_and_torchvision_readers():
    reads = direct_weight_reads(_swin())
    assert any(
        "ShiftedWindowAttention.forward reads self.qkv.weight" in r for r in reads["features.1.0.attn.qkv"]
    )
    mha = direct_weight_reads(nn.Sequential(nn.MultiheadAttention(8, 2)))
    assert "0.out_proj" in mha


def test_class_without_source_is_not_trusted():
    namespace: dict = {}
    source = (
        "class Hidden(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(3, 3)\n"
        "    def forward(self, x):\n"
        "        return F.linear(x, self.fc.weight)\n"
    )
    exec(compile(source, "<generated>", "exec"), {"nn": nn, "F": F}, namespace)
    model = nn.Sequential(namespace["Hidden"](), nn.Linear(3, 3))
    result, messages = _kanify_quiet(model)
    assert result == ["1"] and "Hidden.forward is unavailable" in dict(result.skipped)["0.fc"]
    assert model(torch.randn(2, 3)).shape == (2, 3)


def test_never_adds_a_weight():
    model = nn.Sequential(nn.Linear(3, 3))
    kanify(model)
    assert not hasattr(model[0], "weight")


# ---------------------------------------------------------------------------- identity and state
def test_shared_linear_becomes_one_shared_kanlinear():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4, dtype=torch.float64)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    x = torch.randn(3, 4, dtype=torch.float64)
    expected = model(x)
    result = kanify(model, init="linear")
    assert result == ["0", "2"] and model[0] is model[2] and isinstance(model[0], KANLinear)
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert any("shared" in note for note in result.notes)
    assert_close(model(x), expected, atol=1e-12, rtol=1e-12)


def test_frozen_mode_device_and_dtype_are_kept():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2, dtype=torch.float64))
    model[0].requires_grad_(False)  # frozen
    model[1].bias.requires_grad_(False)  # mixed: weight trainable, bias frozen
    model[2].eval()
    kanify(model)
    frozen, mixed, last = model
    assert not any(p.requires_grad for p in frozen.parameters())
    assert mixed.base_weight.requires_grad and mixed.spline_weight.requires_grad
    assert mixed.spline_scaler.requires_grad and not mixed.bias.requires_grad
    assert all(p.requires_grad for p in last.parameters())
    assert frozen.training and not last.training
    assert last.base_weight.dtype == torch.float64 and frozen.base_weight.dtype == torch.float32


def test_tied_weight_is_reported_and_left_alone():
    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(torch.relu(self.body(self.emb(ids))))

    model = TiedLM()
    result, messages = _kanify_quiet(model)
    assert result == ["body"] and model.head.weight is model.emb.weight
    assert result.skipped == [("head", result.skipped[0][1])] and "tied to emb.weight" in result.skipped[0][1]
    assert "head" in messages[0]
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 10)


def test_lazy_linear_skipped_until_materialised():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    result, messages = _kanify_quiet(model)
    assert result == ["2"] and "LazyLinear" in dict(result.skipped)["0"] and "0:" in messages[0]
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    model(torch.randn(2, 5))  # materialised: it is now a plain nn.Linear(5, 4)
    assert kanify(model) == ["0", "2"] and model[0].in_features == 5


def test_subclasses_and_hooks_are_skipped():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Plain(nn.Linear):
        pass

    hooked = nn.Linear(3, 3)
    hooked.register_forward_hook(lambda m, i, o: o)
    param = nn.Linear(3, 3)
    torch.nn.utils.parametrize.register_parametrization(param, "weight", nn.Identity())
    model = nn.Sequential(Scaled(3, 3), Plain(3, 3), hooked, param)
    result, _ = _kanify_quiet(model)
    reasons = dict(result.skipped)
    assert result == ["1"]
    assert "overrides nn.Linear.forward" in reasons["0"]
    assert "hooks" in reasons["2"] and "parametrized" in reasons["3"]


# ------------------------------------------------------------------------------ construction, meta
def test_constructor_takes_device_and_dtype_positionally_like_linear():
    layer = KANLinear(8, 4, True, "cpu", torch.float64)
    assert layer.base_weight.dtype == torch.float64 and layer.bias is not None
    with pytest.raises(TypeError):
        KANLinear(8, 4, True, "cpu", torch.float64, 5)  # KAN options stay keyword-only


def test_meta_device_then_to_empty_and_reset_parameters():
    layer = KANLinear(6, 3, device="meta")
    assert layer.base_weight.is_meta and layer.grid.is_meta
    with torch.device("meta"):
        ctx_layer = KANLinear(6, 3)
    assert ctx_layer.spline_weight.is_meta
    for lazy in (layer, ctx_layer):
        lazy.to_empty(device="cpu")
        torch.manual_seed(3)
        lazy.reset_parameters()
    torch.manual_seed(3)
    eager = KANLinear(6, 3)
    for key, value in eager.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key


def test_kanify_a_model_built_on_meta():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    assert kanify(model, init="linear") == ["0", "2"]
    assert model[0].base_weight.is_meta
    model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    assert torch.isfinite(model(torch.randn(4, 6))).all()


# ------------------------------------------------------------------------------ cost and filters
def test_parameter_counts_summary_and_refusal():
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    before = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="max_params"):
        kanify(model, max_params=before * 2)
    assert all(type(m) is nn.Linear for m in (model[0], model[2]))  # untouched
    result = kanify(model, grid_size=3, warn_growth=None)
    assert result.params_before == before
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert result.params_after == kan_parameter_count(100, 200, grid_size=3) + kan_parameter_count(
        200, 10, grid_size=3
    )
    text = str(result)
    assert "2 converted" in text and f"{before:,} -> {result.params_after:,}" in text
    assert repr(result) == "['0', '2']"


def test_growth_warning_is_computed_before_allocating():
    with torch.device("meta"):  # a VGG-sized head: nothing is allocated either way
        model = nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Linear(4096, 1000))
    with pytest.warns(UserWarning, match="grows the model's parameters"):
        result = kanify(model)
    assert result.params_after > 9 * result.params_before


def test_filter_presets():
    vit = _vit()
    assert kanify(vit, filter="head") == ["heads.head"]
    assert kanify(vit, filter="head") == []  # already converted: the head is a KANLinear now
    vit = _vit()
    assert kanify(vit, filter="mlp-blocks") == [
        f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in range(2) for j in (0, 3)
    ]
    result, _ = _kanify_quiet(_transformer(), filter="mlp-blocks")
    assert sorted(result) == sorted(
        [f"encoder.layers.{i}.linear{j}" for i in range(2) for j in (1, 2)]
        + ["decoder.layers.0.linear1", "decoder.layers.0.linear2"]
    )
    assert {n for n, _ in result.skipped} == set()  # out_proj is not selected, so not warned about
    assert len(_kanify_quiet(_convnext(), filter="mlp-blocks")[0]) == 4
    with pytest.raises(ValueError, match="mlp-blocks"):
        kanify(_vit(), filter="mlp")


# ------------------------------------------------------------------------------ calibrate / grids
def test_kanify_calibrate_moves_knots_and_keeps_function():
    torch.manual_seed(0)
    model = _vit().double().eval()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64) * 3
    with torch.no_grad():
        expected = model(x)
    result, _ = _kanify_quiet(model, init="linear", calibrate=x)
    head = model.heads.head
    assert not torch.allclose(head.grid[:, 3], torch.full_like(head.grid[:, 3], -1.0))
    with torch.no_grad():
        assert_close(model(x), expected, atol=1e-10, rtol=1e-10)
    # After calibration nothing of the calibration data lies outside any layer's knots.
    fractions = update_grids(model, x)
    assert set(fractions) == set(result) and max(fractions.values()) == 0.0


def test_update_grids_any_model_any_shape_is_each_layers_own_update():
    torch.manual_seed(0)
    model = nn.Sequential(
        KANLinear(5, 6, dtype=torch.float64), nn.Tanh(), KANLinear(6, 3, dtype=torch.float64)
    )
    manual = copy.deepcopy(model)
    model.train()
    x = torch.randn(4, 7, 5, dtype=torch.float64) * 2  # a leading shape beyond (batch,)
    with torch.no_grad():
        expected = model(x)
        hidden = torch.tanh(manual[0](x))  # layer 1's input, recorded before any update
    fractions = calibrate(model, [x[:2], (x[2:], torch.zeros(2))])  # a list of batches
    assert fractions["0"] > 0.0 and model.training  # mode restored
    manual[0].update_grid(x.reshape(-1, 5))
    manual[2].update_grid(hidden.reshape(-1, 6))
    for key, value in manual.state_dict().items():
        assert_close(model.state_dict()[key], value, atol=1e-12, rtol=1e-12, name=key)
    with torch.no_grad():  # the least-squares refit keeps the function closely on the inputs
        assert_close(model(x), expected, atol=1e-2, rtol=0)
    with pytest.raises(TypeError, match="tuple"):
        update_grids(model, (x, x))
    with pytest.raises(ValueError, match="no KANLinear"):
        update_grids(nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="no input"):
        update_grids(nn.ModuleList([model, KANLinear(2, 2)]), x, forward=lambda m, b: m[0](b))


def test_update_grids_shared_layer_and_subset():
    torch.manual_seed(0)
    shared = KANLinear(4, 4, dtype=torch.float64)
    model = nn.Sequential(shared, nn.Tanh(), shared, KANLinear(4, 2, dtype=torch.float64))
    x = torch.randn(8, 4, dtype=torch.float64) * 3
    before = model[3].grid.clone()
    fractions = update_grids(model, x, layers=["0"])
    assert list(fractions) == ["0"] and torch.equal(model[3].grid, before)
    # The shared layer's knots span its inputs from both calls.
    inner = torch.tanh(x).min()
    assert shared.grid[:, 0].max() < inner


def test_regularization_loss_for_any_model():
    torch.manual_seed(0)
    kan = KAN([4, 5, 3])
    model = nn.Sequential(nn.Linear(4, 4), kan, nn.ReLU())
    assert_close(regularization_loss(model), kan.regularization_loss(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="no KANLinear"):
        regularization_loss(nn.Linear(3, 3))


# ------------------------------------------------------------------------------------ distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kanified_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))
    kanify(model)
    return model


def _dist_worker(rank: int, world: int, port: int, out_dir: str, mode: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data, as DDP shards
        x = torch.randn(3 + rank, 5, 6, generator=g) * (1 + rank)  # different row counts per rank
        model = _kanified_mlp()
        if mode == "grids":
            # Different data (and row counts) per rank; one update leaves the ranks identical.
            update_grids(model, x)
            with torch.no_grad():
                out = model(x[:1])
            torch.save({"state": model.state_dict(), "out": out, "x": x[:1]}, f"{out_dir}/rank{rank}.pt")
            return
        if mode == "ddp":
            # Calibrate on different data per rank, train, update again through the wrapper, save.
            update_grids(model, x)
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
            for _ in range(2):
                opt.zero_grad()
                (ddp(x).square().mean() + 1e-3 * regularization_loss(model)).backward()
                opt.step()
            update_grids(ddp, x)
            with torch.no_grad():
                out = model(x[:1])
            torch.save({"state": model.state_dict(), "out": out, "x": x[:1]}, f"{out_dir}/rank{rank}.pt")
            return
        # FSDP2: shard, train a step, gather a full checkpoint; update_grids refuses sharded layers.
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, KANLinear):
                fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            out = model(x[:1])
        # The sharded state dict holds DTensors; gathering each (a collective) gives a full checkpoint.
        state = {
            k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()
        }
        error = ""
        try:
            update_grids(model, x)
        except TypeError as err:
            error = str(err)
        torch.save({"state": state, "out": out, "x": x[:1], "error": error}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn_and_check(tmp_path, mode: str) -> dict:
    torch.multiprocessing.spawn(
        _dist_worker, args=(2, _free_port(), str(tmp_path), mode), nprocs=2, join=True
    )
    saved = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key, value in saved[0]["state"].items():  # the ranks hold identical models
        assert torch.equal(value, saved[1]["state"][key]), key
    for rank in (0, 1):  # the checkpoint reloads into a plain kanified model: same outputs
        plain = _kanified_mlp()
        plain.load_state_dict(saved[rank]["state"])
        with torch.no_grad():
            assert_close(plain(saved[rank]["x"]), saved[rank]["out"], atol=1e-6, rtol=1e-6)
    return saved[0]


def test_update_grids_keeps_ranks_identical(tmp_path):
    saved = _spawn_and_check(tmp_path, "grids")
    grid = saved["state"]["0.grid"]
    assert not torch.equal(grid[:, 3], torch.full_like(grid[:, 3], -1.0))  # the knots moved


# DDP's constructor imports torch._dynamo (~900 modules) in each process: slow on a small machine.
@pytest.mark.slow
def test_ddp_trains_updates_grids_and_checkpoints(tmp_path):
    saved = _spawn_and_check(tmp_path, "ddp")
    grid = saved["state"]["0.grid"]
    assert not torch.equal(grid[:, 3], torch.full_like(grid[:, 3], -1.0))


@pytest.mark.slow
def test_fsdp2_trains_and_checkpoints(tmp_path):
    saved = _spawn_and_check(tmp_path, "fsdp2")
    assert "before sharding" in saved["error"]


def test_update_grid_memory_does_not_scale_with_rows_times_outputs(monkeypatch):
    """calibrate on a ViT-B MLP (768 -> 3072, 8 images x 197 tokens) needed 29.7 GB in update_grid,
    for the (in, rows, out) spline values; above a size limit the refit never forms them now."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import efficient_kan.layer as layer_module

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    LargestTensor.largest = max(LargestTensor.largest, t.numel())
            return out

    from efficient_kan import bspline_basis
    from efficient_kan.layer import _fit_spline_coefficients

    assert layer_module._REFIT_VALUES_MAX_ELEMENTS == 1 << 26  # ViT-B's 3.7e9 is far above
    monkeypatch.setattr(layer_module, "_REFIT_VALUES_MAX_ELEMENTS", 1000)  # small sizes, same path
    torch.manual_seed(0)
    layer = KANLinear(4, 64, dtype=torch.float64)
    old_grid, old_weight = layer.grid.clone(), layer.spline_weight.detach().clone()
    x = torch.randn(256, 4, dtype=torch.float64) * 2
    with LargestTensor():
        layer.update_grid(x)
    assert LargestTensor.largest < 4 * 256 * 64
    # The same coefficients as the least squares on the values themselves.
    values = bspline_basis(x, old_grid, 3).transpose(0, 1) @ old_weight.permute(1, 2, 0)
    expected = _fit_spline_coefficients(bspline_basis(x, layer.grid, 3).transpose(0, 1), values)
    assert_close(layer.spline_weight, expected.permute(2, 0, 1), atol=1e-12, rtol=1e-9)


def test_readme_dropin_example_runs(capsys):
    import re
    from pathlib import Path

    _torchvision()
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"## Drop-in conversion of existing models\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python block under '## Drop-in conversion of existing models'"
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(match.group(1), "README.md", "exec"), namespace)
    assert namespace["result"] == ["fc"] and set(namespace["outside"]) == {"fc"}
    assert "138,357,544 -> 1,251,060,520" in capsys.readouterr().out
