"""Weight decay follows timm's rule on every path, and timm's optimizers build (issue 27)."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from ocula.engine import optim, strategies  # noqa: E402
from ocula.errors import OculaError  # noqa: E402

# one small registered model per family → (names that must decay, names that must not): what a rule on
# names ("token" in the name) got wrong
FAMILIES = {
    "convformer_s18": ({"stages.0.blocks.0.token_mixer.pwconv1.weight"}, set()),  # MetaFormer
    "mixer_s32_224": ({"blocks.0.mlp_tokens.fc1.weight"}, set()),  # MLP-Mixer
    "vit_tiny_patch16_224": ({"blocks.0.attn.qkv.weight"}, {"cls_token", "pos_embed"}),  # no_weight_decay()
    "convnext_atto": ({"stem.0.weight"}, {"stem.0.bias"}),
    "efficientnet_b0": ({"conv_stem.weight"}, {"bn1.weight"}),
    # no_weight_decay() lists 'pos_embed.*': timm >= 1.0.12 matches it as a pattern, older timm as a name
    "xcit_nano_12_p16_224": ({"blocks.0.attn.qkv.weight"}, {"cls_token"}),
    "edgenext_xx_small": ({"stages.1.blocks.1.pos_embd.token_projection.weight"}, set()),  # EdgeNeXt
}


def _split(model, groups) -> tuple[set, set]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    rest = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    return decay, rest


@pytest.mark.parametrize("name", FAMILIES)
def test_plain_and_llrd_groups_equal_timms(name):
    param_groups_weight_decay, _ = optim.timm_group_functions()
    model = timm.create_model(name, pretrained=False, num_classes=3)

    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    ref_decay, ref_rest = _split(model, param_groups_weight_decay(model, 0.05, no_weight_decay_list=skip))
    assert ref_decay and ref_rest and len(ref_decay) + len(ref_rest) == len(list(model.parameters()))
    assert _split(model, optim.param_groups(model, 0.05)) == (ref_decay, ref_rest)
    must_decay, must_not = FAMILIES[name]
    assert must_decay <= ref_decay and must_not <= ref_rest
    for strategy in ("full", "llrd"):  # the strategies' groups (llrd: one pair per layer) decay the same set
        groups = strategies.param_groups(model, strategy, 1e-3, 0.05, layer_decay=0.75, head_lr=1e-2)
        assert _split(model, groups) == (ref_decay, ref_rest), strategy


def test_own_attention_model_keeps_positions_and_class_token_out():
    from ocula.models import create_model

    model = create_model("cnn_transformer", 3, 3, 32, backbone="seed_cnn", frames=4)
    decay, rest = _split(model, optim.param_groups(model, 0.05))
    assert {"cls_token", "pos_embed"} <= rest and "proj.weight" in decay
    assert _split(model, strategies.param_groups(model, "llrd", 1e-3, 0.05)) == (decay, rest)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb", "lion", "adan", "adopt", "nadamw", "radam"])
def test_every_optimizer_choice_builds_and_steps(name):
    from ocula.config import OptimConfig, choices_of

    assert name in choices_of(OptimConfig, "optimizer")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    try:
        opt = optim.build_optimizer(optim.param_groups(model, 0.05), name, 1e-2)
    except OculaError as e:  # adan, adopt came with timm's optimizer registry (1.0.12); older timm says so
        assert not hasattr(timm.optim, "list_optimizers") and f"optimizer '{name}' is not available" in str(e)
        return
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05} and opt.param_groups[0]["lr"] == 1e-2
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # adopt only estimates the second moment on its first step
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    if name == "sgd":  # ocula's recipes: Nesterov momentum, as before
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    if name == "adamw":
        assert type(opt) is torch.optim.AdamW


def test_unknown_optimizer_is_a_one_line_error():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(OculaError, match="optimizer 'nonesuch'"):
        optim.build_optimizer(optim.param_groups(model, 0.0), "nonesuch", 1e-3)


def test_config_takes_timm_optimizers_and_the_probe_factor_covers_them():
    from ocula.config import build_config
    from ocula.engine.plan import PROBE_LR_FACTOR

    cfg = build_config("digits", optimizer="lion", lr=3e-4)
    assert cfg.optim.optimizer == "lion" and PROBE_LR_FACTOR["lion"] == 100 and PROBE_LR_FACTOR["sgd"] == 10
    with pytest.raises(OculaError):
        build_config("digits", optimizer="adamx")


def test_adamw_is_fused_where_torch_supports_it():
    model = torch.nn.Conv2d(3, 4, 3)
    groups = optim.param_groups(model, 0.05)
    assert optim.build_optimizer(groups, "adamw", 1e-3).defaults["fused"]
    half_on_meta = [{"params": [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, device="meta"))]}]
    assert not optim.fused_supported(half_on_meta)


def test_resumed_moments_take_a_channels_last_weights_layout(tmp_path):
    """A training state file holds moments contiguous; a fused AdamW pairs elements by memory order, so moments
    restored in NCHW order under a channels_last weight would update the wrong elements (off by ~lr here)."""
    from ocula.engine.run_files import _match_param_layout
    from ocula.weights_file import load_state, save_state

    def model_and_optimizer():
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        return conv, optim.build_optimizer(optim.param_groups(conv, 0.05), "adamw", 0.1)

    def step(conv, opt, seed):
        torch.manual_seed(seed)
        opt.zero_grad()
        conv(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).square().mean().backward()
        opt.step()

    whole, opt = model_and_optimizer()
    for seed in range(3):
        step(whole, opt, seed)
    resumed, opt = model_and_optimizer()
    step(resumed, opt, 0)
    save_state(tmp_path / "state.safetensors", {"model": resumed.state_dict(), "optimizer": opt.state_dict()})
    state = load_state(tmp_path / "state.safetensors")
    resumed, opt = model_and_optimizer()
    resumed.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    _match_param_layout(opt)
    assert opt.state[resumed.weight]["exp_avg"].stride() == resumed.weight.stride()
    for seed in (1, 2):
        step(resumed, opt, seed)
    torch.testing.assert_close(resumed.weight, whole.weight, rtol=0, atol=1e-6)
