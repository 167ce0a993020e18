"""ocula.explain: CAM family, attention rollout, references, overlays, gallery, CLI."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ocula.errors import OculaError
from ocula.explain.api import explain_tensor
from ocula.explain.cam import CAM_METHODS
from ocula.explain.targets import resolve_target_layer


@pytest.fixture(scope="module")
def tiny_models():
    """Randomly initialised timm models; shapes and hooks, not meaning, are under test here."""
    from ocula.models.registry import create_model

    torch.manual_seed(0)
    return {"cnn": create_model("test_resnet", 3, 3, 64).eval(),
            "vit": create_model("test_vit", 3, 3, 32, patch_size=8, reg_tokens=2).eval()}


def _no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())


def _check_maps(maps, n, size):
    assert isinstance(maps, np.ndarray) and maps.shape == (n, *size) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_methods_on_seed_cnn(digits_run, method):
    import ocula

    clf = ocula.load(digits_run)
    x = torch.stack([clf.preprocess(np.full((8, 8), v, np.uint8)) for v in (0, 120, 255)])
    x[1, :, 2:5, 2:5] = 2.0  # one image with structure
    maps, logits = explain_tensor(clf.model, x, method, layer="features.3")  # 4×4: not yet pooled to 1×1
    _check_maps(maps, 3, (8, 8))
    assert logits.shape == (3, 10)
    assert _no_hooks(clf.model)


def test_flat_default_layer_warns_and_gives_zeros(digits_run):
    import ocula

    clf = ocula.load(digits_run)  # 8×8 digits: seed_cnn's last block is 1×1
    x = torch.randn(2, 1, 8, 8)
    with pytest.warns(UserWarning, match="1×1 feature map"):
        maps, _ = explain_tensor(clf.model, x, "gradcam")
    _check_maps(maps, 2, (8, 8))
    assert maps.max() == 0.0  # no invented hot spot from rounding noise


@pytest.mark.parametrize("family", ["cnn", "vit"])
@pytest.mark.parametrize("method", CAM_METHODS + ("occlusion", "ig"))
def test_methods_on_tiny_timm_models(tiny_models, family, method):
    model = tiny_models[family]
    size = 64 if family == "cnn" else 32
    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps, logits = explain_tensor(model, x, method, window=16 if family == "cnn" else 8, steps=4)
    _check_maps(maps, 2, (size, size))
    assert logits.shape == (2, 3)
    assert _no_hooks(model)
    assert not any(p.grad is not None for p in model.parameters())  # nothing accumulated on weights


def test_target_layer_auto_selection(digits_run, tiny_models):
    import ocula
    from ocula.models.registry import create_model

    assert resolve_target_layer(ocula.load(digits_run).model).name == "features"
    assert resolve_target_layer(tiny_models["cnn"]).name == "layer4"  # timm's feature_info[-1]
    assert resolve_target_layer(create_model("test_convnext", 3, 3, 32)).name == "stages.3"
    vit = tiny_models["vit"]
    layer = resolve_target_layer(vit)
    assert layer.name == f"blocks.{len(vit.blocks) - 1}.norm1"
    tokens = torch.randn(2, vit.num_prefix_tokens + 16, 7)  # 1 cls + 2 register tokens + a 4×4 grid
    grid = layer.to_grid(tokens)
    assert vit.num_prefix_tokens == 3 and grid.shape == (2, 7, 4, 4)
    assert torch.equal(grid[:, :, 1, 2], tokens[:, 3 + 1 * 4 + 2])  # prefix dropped, row-major grid
    pooled = create_model("vit_nano_scratch", 3, 3, 32)  # average-pooled, no class token
    assert resolve_target_layer(pooled).name == f"blocks.{len(pooled.blocks) - 1}"


def test_bad_layer_name_suggests(tiny_models):
    with pytest.raises(OculaError, match=r"no layer 'layer5'.*did you mean: layer4"):
        resolve_target_layer(tiny_models["cnn"], "layer5")
    with pytest.raises(OculaError, match="applies to CAM methods"):
        explain_tensor(tiny_models["vit"], torch.randn(1, 3, 32, 32), "rollout", layer="blocks.0.norm1")


def test_default_methods(digits_run, tiny_models):
    import ocula
    from ocula.explain.api import resolve_method

    assert resolve_method(ocula.load(digits_run).model, "auto") == "gradcam"
    assert resolve_method(tiny_models["cnn"], "auto") == "gradcam"
    assert resolve_method(tiny_models["vit"], "auto") == "rollout"
    assert resolve_method(tiny_models["vit"], "Grad-CAM++") == "gradcam++"
    with pytest.raises(OculaError, match="did you mean: gradcam"):
        resolve_method(tiny_models["cnn"], "gradcma")


def _hand_rollout(vit, x, fusion, discard):
    """Attention rollout computed independently: q/k recomputed from each block's qkv, numpy algebra."""
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        rollout = np.eye(t.shape[1])[None].repeat(x.shape[0], 0)
        for blk in vit.blocks:
            a = blk.attn
            h = blk.norm1(t)
            qkv = a.qkv(h).reshape(h.shape[0], h.shape[1], 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k = qkv[0].numpy(), qkv[1].numpy()
            logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
            attn = np.exp(logits - logits.max(-1, keepdims=True))
            attn /= attn.sum(-1, keepdims=True)
            fused = {"mean": attn.mean(1), "max": attn.max(1), "min": attn.min(1)}[fusion]
            for f in fused:  # zero the weakest entries, never the cls→cls one
                order = np.argsort(f.ravel(), kind="stable")
                order = order[order != 0][:int(f.size * discard)]
                f.ravel()[order] = 0
            fused = (fused + np.eye(fused.shape[-1])) / 2
            fused /= fused.sum(-1, keepdims=True)
            rollout = fused @ rollout
            t = blk(t)
    return rollout[:, 0, 1:].reshape(x.shape[0], 2, 2)


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.5), ("min", 0.0)])
def test_rollout_matches_hand_computation(fusion, discard):
    from timm.models.vision_transformer import VisionTransformer

    from ocula.explain.rollout import collect_attention, rollout_grid

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    attentions, _ = collect_attention(vit, x)
    assert len(attentions) == 2 and attentions[0].shape == (2, 2, 5, 5)
    ours = rollout_grid(attentions, vit, fusion, discard).numpy()
    np.testing.assert_allclose(ours, _hand_rollout(vit, x, fusion, discard), rtol=1e-4, atol=1e-6)
    assert all(b.attn.fused_attn == vit.blocks[0].attn.fused_attn for b in vit.blocks)  # flag restored
    assert _no_hooks(vit)


def _hand_attention_gradient(vit, x, cls):
    """Chefer et al.'s relevance computed independently: explicit attention kept in the graph by hand."""
    t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    attns = []
    for blk in vit.blocks:
        a = blk.attn
        h = blk.norm1(t)
        qkv = a.qkv(h).reshape(h.shape[0], h.shape[1], 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1) * a.scale).softmax(-1)
        attn.retain_grad()
        attns.append(attn)
        out = (attn @ qkv[2]).transpose(1, 2).reshape(h.shape)
        t = t + blk.ls1(a.proj(out))
        t = t + blk.ls2(blk.mlp(blk.norm2(t)))
    logits = vit.forward_head(vit.norm(t))
    logits[torch.arange(x.shape[0]), cls].sum().backward()
    n = x.shape[0]
    r = torch.eye(t.shape[1]).expand(n, -1, -1).clone()
    for attn in attns:
        r = r + (attn.grad * attn).clamp(min=0).mean(1).detach() @ r
    return r[:, 0, 1:].reshape(n, 2, 2).numpy()


def test_attention_gradient_matches_hand_computation_and_depends_on_class():
    from timm.models.vision_transformer import VisionTransformer

    from ocula.explain.rollout import attention_gradient_maps, collect_attention_and_gradients

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    cls = torch.tensor([0, 2])
    attentions, grads, _ = collect_attention_and_gradients(vit, x, cls, list(b.attn for b in vit.blocks))
    r = torch.eye(5).expand(2, 5, 5).clone()
    for a, g in zip(attentions, grads):
        r = r + (g * a).clamp(min=0).mean(1) @ r
    np.testing.assert_allclose(r[:, 0, 1:].reshape(2, 2, 2).numpy(), _hand_attention_gradient(vit, x, cls),
                               rtol=1e-4, atol=1e-6)
    one, _ = attention_gradient_maps(vit, x, torch.tensor([0, 0]))
    other, _ = attention_gradient_maps(vit, x, torch.tensor([1, 1]))
    assert one.shape == (2, 16, 16) and 0 <= one.min() and one.max() <= 1
    assert not np.allclose(one, other)  # class-specific, unlike rollout
    assert _no_hooks(vit) and all(p.grad is None for p in vit.parameters())
    maps, _ = explain_tensor(vit, x, "attn-grad")
    assert maps.shape == (2, 16, 16)


def test_occlusion_and_ig_match_captum(digits_run):
    import ocula
    from ocula.explain.reference import reference_maps

    clf = ocula.load(digits_run)
    x = torch.randn(2, 1, 8, 8, device=next(clf.model.parameters()).device)  # ocula.load picks the GPU if any
    for method in ("occlusion", "ig"):
        ours, _ = reference_maps(clf.model, x, None, method, window=2, steps=32, use_captum=False)
        theirs, _ = reference_maps(clf.model, x, None, method, window=2, steps=32, use_captum=True)
        corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
        assert corr > 0.99, (method, corr)


def test_explain_to_folder_writes_overlays_grid_npz(digits_run, tmp_path):
    import ocula
    from ocula.explain.api import explain_to_folder

    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8)).save(src / f"d{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    summary = explain_to_folder(ocula.load(digits_run), [str(src)], tmp_path / "maps", method="layercam",
                                target="3", layer="features.3")
    assert summary["explained"] == 3 and summary["errors"] == 1 and summary["layer"] == "features.3"
    assert all(item["label"] == "3" for item in summary["items"] if not item["error"])
    with np.load(tmp_path / "maps" / "maps.npz") as z:
        assert sorted(z.files) == [i["map_key"] for i in summary["items"] if not i["error"]]
        assert z[z.files[0]].shape == (8, 8)
    grid = Image.open(tmp_path / "maps" / "grid.png")
    one = Image.open(summary["items"][1]["overlay"])
    assert grid.width > one.width and one.height >= 160  # enlarged: readable
    assert json.loads((tmp_path / "maps" / "summary.json").read_text())["method"] == "layercam"


def test_classifier_explain_and_targets(digits_run):
    import ocula

    clf = ocula.load(digits_run)
    images = [np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8) for i in range(2)]
    maps = clf.explain(images, method="ig", target=7)
    assert len(maps) == 2 and maps[0].shape == (8, 8) and maps[0].max() == 1.0
    with pytest.raises(OculaError, match="unknown target class 'seven'"):
        clf.explain(images, target="seven")
    with pytest.raises(OculaError, match="out of range"):
        clf.explain(images, target=12)


def test_explain_errors_gallery(digits_run, tmp_path):
    from ocula.explain.gallery import explain_errors

    summary = explain_errors(digits_run, "digits", n=3, out=tmp_path / "errors", method="gradcam++")
    assert summary["errors"] >= summary["shown"] > 0  # a 4-epoch seed_cnn still makes mistakes
    rows = (tmp_path / "errors" / "errors.csv").read_text().splitlines()
    assert rows[0] == "rank,source,true,predicted,prob" and len(rows) == summary["shown"] + 1
    probs = [float(r.split(",")[-1]) for r in rows[1:]]
    assert probs == sorted(probs, reverse=True)  # most confident first
    assert all(r["true"] != r["predicted"] for r in summary["items"])
    assert Image.open(tmp_path / "errors" / "errors.png").width > 0


def test_cli_explain_in_process(digits_run, tmp_path, capsys):
    from ocula.cli import main

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    assert main(["explain", digits_run, str(img), "--method", "occlusion", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "occlusion: 1 maps" in out and (tmp_path / "m" / "maps.npz").is_file()
    assert main(["explain", digits_run, str(img), "--layer", "feature.3", "--out", str(tmp_path / "m")]) == 2
    assert "did you mean: features.3" in capsys.readouterr().err


def _video_models_available() -> bool:
    from ocula.models.registry import list_models

    return {"frame_avg", "cnn_transformer", "seed_attention"} <= set(list_models(include_timm=False))


@pytest.mark.skipif(not _video_models_available(), reason="ocula's video families are not registered")
def test_video_models_get_one_map_per_frame(tmp_path):
    from ocula.bundle import make_meta
    from ocula.data.contract import DataContract
    from ocula.explain.api import explain, explain_to_folder
    from ocula.inference.predictor import Classifier
    from ocula.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("frame_avg", 3, 3, 32, backbone="seed_cnn", frames=4).eval()
    contract = DataContract(input_size=32, channels=3, mean=(0.5,), std=(0.5,), frames=4)
    # a bundle written before modalities were recorded: its task field said "video"
    clf = Classifier(model, make_meta(model.ocula_arch, contract, ["a", "b", "c"], task="video"))
    assert clf.modality.name == "video" and clf.task.name == "single-label"
    clips = [np.random.default_rng(i).integers(0, 255, (6, 40, 40, 3), dtype=np.uint8) for i in range(2)]
    maps = explain(clf, clips, method="layercam")
    assert [m.shape for m in maps] == [(4, 32, 32)] * 2 and all(0 <= m.min() and m.max() == 1.0 for m in maps)
    summary = explain_to_folder(clf, clips, tmp_path / "v", method="auto")
    assert summary["method"] == "gradcam" and summary["layer"] == "encoder.net.features"  # per-frame encoder
    assert Image.open(summary["items"][0]["overlay"]).width > 4 * 32  # a strip of frames
    assert _no_hooks(model)


@pytest.mark.skipif(not _video_models_available(), reason="ocula's video families are not registered")
def test_attention_families_rollout():
    from ocula.explain.api import resolve_method
    from ocula.models.registry import create_model

    torch.manual_seed(0)
    seed = create_model("seed_attention", 3, 3, 32).eval()  # 8×8 patch tokens, one single-head layer
    assert resolve_method(seed, "auto") == "rollout"
    maps, _ = explain_tensor(seed, torch.randn(2, 3, 32, 32), "rollout")
    _check_maps(maps, 2, (32, 32))
    video = create_model("cnn_transformer", 3, 3, 32, backbone="vit_nano_scratch", frames=3, dim=32, heads=2).eval()
    maps, _ = explain_tensor(video, torch.randn(2, 3, 3, 32, 32), "rollout")  # the frame encoder's ViT only
    assert maps.shape == (2, 3, 32, 32) and maps.max() == 1.0
    assert _no_hooks(video) and all(b.attn.fused_attn for b in video.blocks)
