"""Tests of saltseg.models: every registered architecture, the input adapter, the blocks, weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base.modules import SCSEModule

from saltseg.errors import CheckpointError, ConfigError, SaltsegError
from saltseg.models import (
    MODEL_REGISTRY,
    InputAdapter,
    ModelConfig,
    SaltModel,
    count_parameters,
    create_model,
    list_models,
    register_model,
)
from saltseg.models.blocks import FPA, GAU, GCN, Hypercolumn, PyramidPooling, attention
from saltseg.models.vanilla import decreasing_dropout_schedule

BUILTIN = ["classifier", "dilated_unet", "gcn_gau", "unet", "vanilla_unet"]
SEGMENTATION = ["dilated_unet", "gcn_gau", "unet", "vanilla_unet"]


def tiny(arch: str, **overrides: Any) -> ModelConfig:
    """A small but complete config of ``arch`` (resnet18 encoder, few channels)."""
    fields: dict[str, Any] = {
        "arch": arch,
        "encoder": "resnet18",
        "decoder_channels": [16, 8, 8, 4, 4],
        "base_channels": 4,
        "depth": 3,
    }
    fields.update(overrides)
    return ModelConfig(**fields)


def tiles(batch: int = 2, size: int = 101) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))


# --------------------------------------------------------------------------- registry


def test_builtin_models_registered() -> None:
    assert list_models() == sorted(MODEL_REGISTRY)
    assert set(BUILTIN) <= set(list_models())


def test_register_custom_model_and_duplicate() -> None:
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"mask": x[:, :1] * 0 + 3.0}

    @register_model("_test_constant")
    def build(cfg: ModelConfig) -> nn.Module:
        return Constant()

    try:
        model = create_model(ModelConfig(arch="_test_constant", input_size=64))
        out = model(tiles(size=50))
        assert out["mask"].shape == (2, 1, 50, 50)
        assert torch.all(out["mask"] == 3.0)
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_constant")(lambda cfg: Constant())
    finally:
        MODEL_REGISTRY.pop("_test_constant", None)


def test_unknown_arch_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown model arch 'nope'") as info:
        create_model(ModelConfig(arch="nope"))
    assert all(name in str(info.value) for name in BUILTIN)


def test_unknown_encoder() -> None:
    with pytest.raises(ConfigError, match="unknown encoder 'resnet_nope'"):
        create_model(tiny("unet", encoder="resnet_nope"))
    with pytest.raises(ConfigError, match="timm model 'resnet_nope'"):
        create_model(tiny("classifier", encoder="resnet_nope"))


@pytest.mark.parametrize("size", [100, 48, 112])
def test_bad_input_size(size: int) -> None:
    with pytest.raises(ValidationError, match="multiple of 32"):
        ModelConfig(input_size=size)
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_model({"input_size": size})


@pytest.mark.parametrize("size", [0, -32])
def test_input_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValidationError, match="must be positive"):
        ModelConfig(input_size=size)


def test_scratch_unet_input_size_follows_its_depth() -> None:
    """The from-scratch U-Nets need 2 ** depth: 112 is enough for a 101 tile at depth 4."""
    cfg = tiny("dilated_unet", input_size=112, depth=4, base_channels=4)
    model = create_model(cfg)
    out = model(torch.rand(2, 1, 101, 101))
    logits = out["mask"] if isinstance(out, dict) else out
    assert logits.shape[-2:] == (101, 101)
    with pytest.raises(ValidationError, match="multiple of 16 for dilated_unet with depth 4, got 104"):
        ModelConfig(arch="dilated_unet", depth=4, input_size=104)
    assert ModelConfig(arch="vanilla_unet", depth=3, input_size=104).input_size == 104


@pytest.mark.parametrize(
    "fields",
    [
        {"channels": ["image", "depth"]},
        {"channels": []},
        {"channels": ["image", "image"]},
        {"resize_to": 300},
        {"decoder_channels": [8] * 6},
        {"dropout": 1.0},
        {"std": 0.0},
        {"normalize": "minmax"},
        {"attention": "cbam"},
        {"color": "red"},
    ],
)
def test_invalid_config(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModelConfig(**fields)


def test_config_defaults_and_create_from_mapping() -> None:
    cfg = ModelConfig()
    assert (cfg.arch, cfg.encoder, cfg.input_size, cfg.normalize) == ("unet", "resnet34", 128, "standardize")
    assert cfg.channels == ["image"] and cfg.attention == "scse" and cfg.hypercolumn
    model = create_model({"arch": "vanilla_unet", "base_channels": 4, "depth": 2, "input_size": 64})
    assert isinstance(model, SaltModel)
    assert model.config.arch == "vanilla_unet" and model.config.depth == 2


# --------------------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("arch", BUILTIN)
def test_forward_shapes_101(arch: str, deep_supervision: bool) -> None:
    cfg = tiny(arch, deep_supervision=deep_supervision, input_size=128)
    model = create_model(cfg)
    assert isinstance(model, SaltModel) and model.config is cfg
    out = model(tiles())
    if arch == "classifier":
        assert set(out) == {"salt"}
    elif deep_supervision:
        assert set(out) == {"mask", "mask_nonempty", "salt"}
    else:
        assert set(out) == {"mask"}
    for key in ("mask", "mask_nonempty"):
        if key in out:
            assert out[key].shape == (2, 1, 101, 101)
            assert torch.isfinite(out[key]).all()
    if "salt" in out:
        assert out["salt"].shape == (2,)


@pytest.mark.parametrize("arch", ["unet", "dilated_unet"])
def test_resize_to_202_in_256(arch: str) -> None:
    model = create_model(tiny(arch, resize_to=202, input_size=256, deep_supervision=True))
    x = tiles()
    assert model.adapter(x).shape == (2, 1, 256, 256)
    out = model(x)
    assert out["mask"].shape == (2, 1, 101, 101)
    assert out["mask_nonempty"].shape == (2, 1, 101, 101)


@pytest.mark.parametrize("arch", ["unet", "gcn_gau"])
def test_drop_first_maxpool(arch: str) -> None:
    plain = create_model(tiny(arch, input_size=64))
    dropped = create_model(tiny(arch, input_size=64, drop_first_maxpool=True))
    assert any(isinstance(m, nn.MaxPool2d) for m in plain.net.encoder.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in dropped.net.encoder.modules())
    z = torch.zeros(2, 1, 64, 64)
    assert plain.net.encoder(z)[-1].shape[-1] == 2  # stride 32
    assert dropped.net.encoder(z)[-1].shape[-1] == 4  # stride 16
    assert dropped(tiles(size=50))["mask"].shape == (2, 1, 50, 50)


def test_tu_encoder_and_fpa_center() -> None:
    model = create_model(tiny("unet", encoder="tu-resnet10t", center="fpa", input_size=64))
    assert isinstance(model.net.center, FPA)
    assert model(tiles(size=64))["mask"].shape == (2, 1, 64, 64)


def test_deep_supervision_fused_head_uses_image_features() -> None:
    model = create_model(tiny("vanilla_unet", deep_supervision=True, input_size=64)).eval()
    heads = model.net.heads
    assert heads.fuse[0][0].in_channels == 2 * heads.pixel[0].out_channels
    x = tiles(size=64)
    with torch.no_grad():
        before = model(x)
        heads.image[0].bias.add_(5.0)  # changes only the image-level features
        after = model(x)
    assert not torch.allclose(before["mask"], after["mask"])
    assert torch.equal(before["mask_nonempty"], after["mask_nonempty"])


def test_hypercolumn_switch_changes_head_input() -> None:
    with_hc = create_model(tiny("unet", input_size=64, hypercolumn=True))
    without = create_model(tiny("unet", input_size=64, hypercolumn=False))
    from saltseg.models.heads import HYPERCOLUMN_CHANNELS

    heads = with_hc.net.heads
    # every decoder output is projected, then the head convolves the concatenated projections
    assert [p.in_channels for p in heads.project] == list(with_hc.config.decoder_channels)
    assert heads.mask[0][0].in_channels == HYPERCOLUMN_CHANNELS * len(with_hc.config.decoder_channels)
    in_plain = next(m for m in without.net.heads.modules() if isinstance(m, nn.Conv2d)).in_channels
    assert in_plain == without.config.decoder_channels[-1]


# --------------------------------------------------------------------------- input adapter


@pytest.mark.parametrize(
    "channels",
    [
        ["image"],
        ["image", "row_ramp"],
        ["image", "x_ramp", "cumsum"],
        ["image", "row_ramp", "x_ramp", "cumsum"],
    ],
)
def test_channels_count(channels: list[str]) -> None:
    model = create_model(tiny("vanilla_unet", channels=channels, input_size=128))
    assert model.adapter.out_channels == len(channels)
    assert model.adapter(tiles()).shape == (2, len(channels), 128, 128)
    assert first_conv(model).in_channels == len(channels)
    assert model(tiles())["mask"].shape == (2, 1, 101, 101)


def test_channel_values() -> None:
    cfg = ModelConfig(channels=["cumsum", "row_ramp", "x_ramp", "image"], normalize="div255")
    x = tiles()
    built = InputAdapter(cfg).build_channels(x)
    cumsum, ramp, x_ramp, image = built.unbind(1)
    assert torch.equal(image, x[:, 0])
    assert torch.allclose(ramp[:, 0], torch.zeros(2, 101)) and torch.allclose(ramp[:, -1], torch.ones(2, 101))
    assert torch.allclose(ramp[0, 50], torch.full((101,), 0.5))
    assert torch.equal(ramp[:, :, 0], ramp[:, :, 77])  # constant across columns
    assert torch.allclose(x_ramp, image * ramp)
    assert torch.allclose(cumsum[:, -1], x[:, 0].sum(dim=1) / 101, atol=1e-6)
    assert torch.allclose(cumsum[:, 0], x[:, 0, 0] / 101)


def test_standardize_math_and_padding() -> None:
    cfg = ModelConfig(normalize="standardize", mean=0.25, std=0.5, input_size=128)
    adapter = InputAdapter(cfg)
    x = tiles()
    out = adapter(x)
    assert adapter.padding(101, 101) == (13, 14, 13, 14)
    assert torch.allclose(out[:, :, 13:114, 13:114], (x - 0.25) / 0.5)
    assert torch.allclose(out[:, :, 12, 13:114], out[:, :, 14, 13:114])  # reflect padding
    assert torch.allclose(adapter.restore(out, (101, 101)), (x - 0.25) / 0.5)
    raw = InputAdapter(ModelConfig(normalize="div255", input_size=128))(x)
    assert torch.equal(raw[:, :, 13:114, 13:114], x)


@pytest.mark.parametrize("pad_mode", ["replicate", "constant"])
def test_pad_modes(pad_mode: str) -> None:
    out = InputAdapter(ModelConfig(normalize="div255", pad_mode=pad_mode, input_size=128))(tiles())
    expected = out[:, :, 13, 13] if pad_mode == "replicate" else torch.zeros(2, 1)
    assert torch.equal(out[:, :, 0, 0], expected)


def test_resize_restore_roundtrip() -> None:
    adapter = InputAdapter(ModelConfig(normalize="div255", resize_to=202, input_size=256))
    x = torch.linspace(0, 1, 101).view(1, 1, 101, 1).expand(2, 1, 101, 101).contiguous()
    out = adapter(x)
    assert out.shape == (2, 1, 256, 256)
    assert torch.allclose(adapter.restore(out, (101, 101)), x, atol=1e-2)


def test_adapter_rejects_too_large_tile() -> None:
    adapter = InputAdapter(ModelConfig(input_size=64))
    with pytest.raises(SaltsegError, match="does not fit"):
        adapter(tiles(size=101))
    with pytest.raises(SaltsegError, match="too small to reflect-pad"):
        InputAdapter(ModelConfig(input_size=128))(tiles(size=20))


# --------------------------------------------------------------------------- encoder weights


def random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (torch.rand(v.shape, generator=gen) if v.is_floating_point() else v.clone())
        for k, v in module.state_dict().items()
    }


def test_encoder_weights_from_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    fresh = smp.encoders.get_encoder("resnet18", in_channels=1, depth=5, weights=None)
    state = random_state(fresh, seed=1)
    path = tmp_path / "enc.safetensors"
    save_file(state, str(path))
    loaded = create_model(tiny("unet", encoder_weights=str(path))).net.encoder.state_dict()
    default = create_model(tiny("unet")).net.encoder.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert not torch.equal(default["conv1.weight"], state["conv1.weight"])


def test_encoder_weights_rgb_pth_adapted_to_one_channel(tmp_path: Path) -> None:
    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, depth=5, weights=None)
    state = random_state(rgb, seed=2)
    state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet head is ignored
    path = tmp_path / "rgb.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    encoder = create_model(tiny("gcn_gau", encoder_weights=str(path))).net.encoder
    assert encoder.conv1.weight.shape[1] == 1
    assert torch.allclose(encoder.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_classifier_weights(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    state = random_state(timm.create_model("resnet18", pretrained=False, num_classes=1000), seed=3)
    path = tmp_path / "cls.safetensors"
    save_file(state, str(path))
    model = create_model(tiny("classifier", encoder_weights=str(path)))
    assert torch.allclose(model.net.model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert model.net.model.fc.weight.shape == (1, 512)


def test_encoder_weights_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="not found") as info:
        create_model(tiny("unet", encoder_weights=str(path)))
    assert str(path) in str(info.value)


def test_encoder_weights_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="does not fit") as info:
        create_model(tiny("unet", encoder_weights=str(foreign)))
    assert str(foreign) in str(info.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read") as info:
        create_model(tiny("unet", encoder_weights=str(garbage)))
    assert str(garbage) in str(info.value)


# --------------------------------------------------------------------------- numerics, gradients, export


@pytest.mark.parametrize("arch", ["unet", "gcn_gau", "dilated_unet"])
def test_bf16_autocast_channels_last(arch: str) -> None:
    model = create_model(tiny(arch, deep_supervision=True, center="fpa", input_size=128))
    model = model.to(memory_format=torch.channels_last)
    x = tiles().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out["mask"].dtype == torch.bfloat16
    assert out["mask"].shape == (2, 1, 101, 101) and out["salt"].shape == (2,)
    assert all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.parametrize("arch", BUILTIN)
def test_gradients_flow(arch: str) -> None:
    model = create_model(tiny(arch, deep_supervision=True, input_size=64, channels=["image", "cumsum"]))
    out = model(tiles(size=64))
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_eval_is_deterministic_and_batch_independent() -> None:
    model = create_model(tiny("vanilla_unet", dropout=0.5, deep_supervision=True, input_size=64)).eval()
    x = tiles(size=64)
    with torch.no_grad():
        full = model(x)["mask"]
        single = model(x[1:])["mask"]
    assert torch.allclose(full[1:], single, atol=1e-5)


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = create_model(tiny("vanilla_unet", deep_supervision=True, input_size=64)).eval()
    x = tiles(size=50)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path))
    results = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert [r.shape for r in results] == [tuple(v.shape) for v in expected.values()]
    assert torch.allclose(torch.from_numpy(results[0]), expected["mask"], atol=1e-4)


# --------------------------------------------------------------------------- blocks and helpers


@pytest.mark.parametrize("size", [1, 2, 4, 8, 5])
def test_fpa_any_size(size: int) -> None:
    block = FPA(16, 8)
    assert block(torch.randn(2, 16, size, size)).shape == (2, 8, size, size)


def test_fpa_attention_multiplies_mid_branch() -> None:
    block = FPA(4, 4).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        block.mid[0].weight.zero_()
        block.mid[1].bias.zero_()  # mid branch -> relu(0) = 0, output = global branch only
        out = block(x)
        glob = block.glob(x)
    assert torch.allclose(out, glob.expand_as(out))


def test_hypercolumn() -> None:
    features = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 8, 8), torch.randn(2, 2, 16, 16)]
    out = Hypercolumn()(features)
    assert out.shape == (2, 14, 16, 16)
    assert torch.equal(out[:, 12:], features[2])


def test_gcn_separable_large_kernel() -> None:
    block = GCN(1, 1, kernel_size=5)
    kernel_shapes = {tuple(m.kernel_size) for m in block.modules() if isinstance(m, nn.Conv2d)}
    assert kernel_shapes == {(5, 1), (1, 5)}
    impulse = torch.zeros(1, 1, 11, 11)
    impulse[0, 0, 5, 5] = 1.0
    with torch.no_grad():
        response = block(impulse) - block(torch.zeros_like(impulse))
    assert response[0, 0, 3:8, 3:8].abs().min() > 0  # full 5x5 support
    assert response[0, 0, :3].abs().max() == 0 and response[0, 0, :, 8:].abs().max() == 0


def test_gau_gates_low_level_and_adds_high_level() -> None:
    block = GAU(low_channels=6, high_channels=4, out_channels=4)
    low, high = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 4, 4)
    out = block(low, high)
    assert out.shape == (2, 4, 8, 8)
    with torch.no_grad():
        block.gate[1].bias.fill_(-1e4)  # gate closed -> only the upsampled high-level features remain
        closed = block(low, high)
    expected = torch.nn.functional.interpolate(high, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(closed, expected, atol=1e-6)


def test_small_channel_scse() -> None:
    module = attention("scse", 4)
    assert module(torch.randn(2, 4, 3, 3)).shape == (2, 4, 3, 3)
    assert isinstance(attention(None, 4).attention, nn.Identity)


def test_decreasing_dropout_schedule_in_model() -> None:
    assert decreasing_dropout_schedule(0.5, 4) == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    model = create_model(tiny("vanilla_unet", decreasing_dropout=0.4, depth=3, input_size=64))
    probs = [model.net.bottleneck_dropout.p] + [d.p for d in model.net.up_dropouts]
    assert probs == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert probs == sorted(probs, reverse=True)


def test_dilated_unet_has_dilated_bottleneck() -> None:
    model = create_model(tiny("dilated_unet", input_size=64))
    dilations = {m.dilation[0] for m in model.net.bottleneck.modules() if isinstance(m, nn.Conv2d)}
    assert dilations == {1, 2, 4, 8}
    plain = create_model(tiny("vanilla_unet", input_size=64))
    assert {m.dilation[0] for m in plain.net.modules() if isinstance(m, nn.Conv2d)} == {1}


def test_count_parameters() -> None:
    model = create_model(tiny("unet", input_size=64))
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters()) > 0
    for p in model.net.encoder.parameters():
        p.requires_grad_(False)
    encoder = sum(p.numel() for p in model.net.encoder.parameters())
    assert count_parameters(model, trainable_only=True) == total - encoder


@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("arch", BUILTIN)
def test_every_parameter_gets_a_gradient(arch: str, deep_supervision: bool) -> None:
    """No module is built and then left unused (scSE on the skip-less last block was): DDP refuses to
    train a model with unused parameters."""
    from saltseg.losses import DeepSupervisionWeights, LossConfig, create_loss

    cfg = tiny(arch, deep_supervision=deep_supervision, attention="scse", hypercolumn=True)
    if arch == "unet":
        cfg = cfg.model_copy(update={"center": "fpa"})
    model = create_model(cfg)
    weights = DeepSupervisionWeights() if deep_supervision else None
    loss_fn = create_loss(LossConfig(name="bce_dice", deep_supervision=weights))
    target = torch.zeros(2, 1, 101, 101)
    target[0, :, 20:60, 30:70] = 1.0
    loss_fn(model(tiles()), target).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_checkpoint_with_the_old_unused_attention_loads(tmp_path: Path) -> None:
    """Checkpoints written before the skip-less block lost its never-used first scSE still load."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from saltseg.checkpoints import load_model, save_weights

    model = create_model(tiny("unet", attention="scse"))
    path = save_weights(model, tmp_path / "new.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    meta.pop("tensors_sha256")  # files of that time carried no checksum
    state = load_file(str(path))
    last = len(tiny("unet").decoder_channels) - 1
    old_keys = {f"net.blocks.{last}.attention1.cSE.1.weight": torch.ones(2, 4, 1, 1)}
    assert not set(old_keys) & set(state)
    save_file({**state, **old_keys}, str(tmp_path / "old.safetensors"), metadata=meta)
    loaded = load_model(tmp_path / "old.safetensors")
    x = tiles()
    torch.testing.assert_close(loaded(x)["mask"], model.eval()(x)["mask"])


@pytest.mark.parametrize("arch", SEGMENTATION)
def test_image_head_alone_adds_a_salt_logit_and_little_else(arch: str) -> None:
    from saltseg.losses import create_loss
    from saltseg.losses.config import DeepSupervisionWeights, LossConfig

    plain = create_model(tiny(arch, input_size=128))
    model = create_model(tiny(arch, input_size=128, image_head=True))
    out = model(tiles())
    assert set(out) == {"mask", "salt"} and out["salt"].shape == (2,)
    extra = count_parameters(model) - count_parameters(plain)
    assert 0 < extra < 0.05 * count_parameters(plain)
    loss_fn = create_loss(LossConfig(deep_supervision=DeepSupervisionWeights(salt=0.1, nonempty=0.0)))
    target = torch.zeros(2, 1, 101, 101)
    target[1, :, 20:40, 20:40] = 1
    loss = loss_fn(out, target)
    loss.backward()
    head = model.net.heads
    assert head.image_logit.weight.grad is not None and head.image_logit.weight.grad.abs().sum() > 0
    # a loss that needs the non-empty pixel head says so
    with pytest.raises(ValueError, match="mask_nonempty"):
        create_loss(LossConfig(deep_supervision=DeepSupervisionWeights()))(model(tiles()), target)


@pytest.mark.parametrize("arch", ["vanilla_unet", "dilated_unet"])
def test_residual_blocks_keep_shapes_and_add_shortcuts(arch: str) -> None:
    from saltseg.models.vanilla import ResidualBlock

    plain = create_model(tiny(arch, input_size=128))
    model = create_model(tiny(arch, input_size=128, residual=True))
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert blocks and not any(isinstance(m, ResidualBlock) for m in plain.modules())
    out = model(tiles())
    assert out["mask"].shape == (2, 1, 101, 101) and torch.isfinite(out["mask"]).all()
    # the same convolutions plus 1x1 projections where the width changes
    assert 1.0 < count_parameters(model) / count_parameters(plain) < 1.3
    block = ResidualBlock(4, 4, batchnorm=True).eval()
    with torch.no_grad():
        block.second[0].weight.zero_()
        block.second[1].bias.zero_()
        x = torch.randn(1, 4, 8, 8)
        assert torch.allclose(block(x), torch.relu(x))  # a zero residual branch leaves the identity


@pytest.mark.parametrize("arch", ["vanilla_unet", "dilated_unet"])
def test_encoder_weights_on_a_net_without_an_encoder_is_a_config_error(arch: str, tmp_path: Path) -> None:
    """Issue 12: encoder_weights was accepted and silently ignored for the from-scratch nets."""
    from saltseg.errors import ConfigError

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="encoder_weights is for the encoder architectures"):
        create_model({"arch": arch, "base_channels": 4, "depth": 3, "encoder_weights": str(weights)})


class _Hostile:
    """Pickles to a call (here harmless): what a malicious .pth does."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this ran while unpickling",))


def test_a_hostile_pth_is_refused_in_one_line_without_pytorchs_advice(tmp_path: Path) -> None:
    """Issue 13 #19: PyTorch's own message advises retrying with weights_only=False, wrong for an
    untrusted file."""
    import torch

    from saltseg.errors import CheckpointError
    from saltseg.models.weights import read_state_dict

    path = tmp_path / "hostile.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": _Hostile()}, path)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    msg = str(exc.value)
    assert "refused" in msg and str(path) in msg and "\n" not in msg
    assert "weights_only=False" not in msg and "weights_only" not in msg
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot read weights file") as exc:
        read_state_dict(tmp_path / "cut.pth")
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- the winners' blocks (issue 14)


def grads_reach_every_parameter(model: nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    sum(v.float().sum() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("size", [7, 4, 1])
def test_pyramid_pooling_keeps_size_and_sees_the_whole_map(size: int) -> None:
    # seeded: about 2% of random inits carry the corner's change below allclose's tolerance (it failed
    # once in the suite, after another test's draws)
    torch.manual_seed(0)
    block = PyramidPooling(16, 8).eval()
    x = torch.randn(2, 16, size, size)
    with torch.no_grad():
        out = block(x)
        changed = x.clone()
        changed[:, :, 0, 0] += 5.0  # one corner: the 1x1 bin carries it to the opposite corner
        far = block(changed)[:, :, -1, -1]
    assert out.shape == (2, 8, size, size)
    if size > 1:
        assert not torch.allclose(far, out[:, :, -1, -1])


@pytest.mark.parametrize("arch", ["dilated_unet", "unet", "gcn_gau"])
def test_pyramid_pooling_centre_in_every_architecture(arch: str) -> None:
    model = create_model(tiny(arch, center="ppm", input_size=128))
    assert any(isinstance(m, PyramidPooling) for m in model.modules())
    out = model(torch.rand(2, 1, 101, 101))
    assert out["mask"].shape == (2, 1, 101, 101)
    out["mask"].mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_fpa_without_its_7x7_level() -> None:
    fpa = FPA(8, 8, kernels=(5, 3))
    kernels = [m.kernel_size for m in fpa.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1]
    assert (7, 7) not in kernels and (5, 5) in kernels and (3, 3) in kernels
    assert fpa(torch.rand(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    names = set(dict(FPA(8, 8).named_parameters()))  # the default keeps the old checkpoint names
    assert {
        "down1.0.weight",
        "down3.0.0.weight",
        "down3.1.0.weight",
        "conv2.0.weight",
        "conv1.0.weight",
    } <= names
    model = create_model(tiny("unet", center="fpa", fpa_kernels=[5, 3], input_size=64))
    grads_reach_every_parameter(model, tiles(size=64))
    with pytest.raises(ValidationError):
        tiny("unet", fpa_kernels=[4, 3])


@pytest.mark.parametrize("encoder", ["resnet18", "se_resnext50_32x4d"])
def test_scse_inside_the_encoder_stages(encoder: str) -> None:
    cfg = tiny("unet", encoder=encoder, encoder_attention="scse", input_size=64)
    model = create_model(cfg)
    stages = [getattr(model.net.encoder, f"layer{k}") for k in range(1, 5)]
    assert all(isinstance(s, nn.Sequential) and isinstance(s[-1], SCSEModule) for s in stages)
    plain = create_model(tiny("unet", encoder=encoder, input_size=64))
    z = torch.rand(2, 1, 64, 64)
    assert [f.shape for f in model.net.encoder(z)] == [f.shape for f in plain.net.encoder(z)]
    grads_reach_every_parameter(model, tiles(size=64))
    with pytest.raises(ConfigError, match="layer1-layer4"):
        create_model(tiny("unet", encoder="tu-resnet10t", encoder_attention="scse", input_size=64))


def test_conv3x3_stem_keeps_the_strides() -> None:
    model = create_model(tiny("unet", stem="conv3x3", input_size=64))
    conv = model.net.encoder.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.in_channels == 1
    plain = create_model(tiny("unet", input_size=64))
    z = torch.rand(2, 1, 64, 64)
    assert [f.shape for f in model.net.encoder(z)] == [f.shape for f in plain.net.encoder(z)]
    assert model(tiles(size=64))["mask"].shape == (2, 1, 64, 64)


def test_transposed_convolution_decoder() -> None:
    model = create_model(tiny("unet", decoder_upsample="transposed", input_size=128, deep_supervision=True))
    ups = [m for m in model.net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 5 and all(u.stride == (2, 2) for u in ups)
    assert model(tiles())["mask"].shape == (2, 1, 101, 101)
    grads_reach_every_parameter(model, tiles())
    with pytest.raises(ValidationError, match="decoder_upsample"):
        tiny("gcn_gau", decoder_upsample="transposed")


def test_gcn_inside_the_global_attention_upsample() -> None:
    model = create_model(tiny("gcn_gau", gau_gcn_kernel=5, input_size=64))
    assert all(isinstance(g.low[0], GCN) for g in model.net.gaus)
    assert model(tiles(size=64))["mask"].shape == (2, 1, 64, 64)
    grads_reach_every_parameter(model, tiles(size=64))
    with pytest.raises(ValidationError, match="gau_gcn_kernel"):
        tiny("unet", gau_gcn_kernel=5)
    with pytest.raises(ValidationError):
        tiny("gcn_gau", gau_gcn_kernel=4)


def test_encoder_blocks_are_refused_on_the_scratch_nets() -> None:
    for field, value in (("encoder_attention", "scse"), ("stem", "conv3x3")):
        with pytest.raises(ValidationError, match=field):
            tiny("dilated_unet", **{field: value})
