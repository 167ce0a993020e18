"""Defaults chosen from the data: native input size and channels, measured flip decisions, and one
definition of every augmentation preset for data in RAM and streamed from files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ocula.config import build_config
from ocula.modality import for_contract
from ocula.data.contract import DataContract
from ocula.data.samples import FileSamples, TensorSamples
from ocula.modality.sources import resolve_data
from ocula.engine import flip_probe
from ocula.engine.input_choice import choose_contract


def _folder(root, size=(20, 20), mode="L", per_class=6, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return str(root)


def _choice(data, **overrides):
    cfg = build_config(data, **overrides)
    return choose_contract(cfg, resolve_data(data))


# ------------------------------------------------------------------------------ input contract
def test_scratch_model_takes_the_native_size_and_grey(tmp_path):
    choice = _choice(_folder(tmp_path / "d", size=(20, 20), mode="L"), model="seed_cnn")
    assert (choice.contract.input_size, choice.contract.channels) == (20, 1)
    assert choice.reason.startswith("input 20×20×1: the data's native size")
    assert "all grey" in choice.reason and choice.evidence["sampled"]["sampled"] == 10  # the training split


def test_colour_data_stays_rgb_and_grey_saved_as_rgb_is_grey(tmp_path):
    assert _choice(_folder(tmp_path / "rgb", mode="RGB")).contract.channels == 3
    root = tmp_path / "greyrgb"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (24, 24), 40 * i).convert("RGB").save(root / c / f"{i}.jpg")
    choice = _choice(str(root))
    assert choice.contract.channels == 1 and "saved as RGB" in choice.reason


def test_large_photos_are_capped_and_timm_sizes_rounded(tmp_path):
    big = _folder(tmp_path / "big", size=(600, 400), mode="RGB", per_class=2)
    assert _choice(big, model="seed_cnn").contract.input_size == 224
    small = _folder(tmp_path / "small", size=(12, 12), per_class=2)
    assert _choice(small, model="resnet18").contract.input_size == 32  # timm CNNs: at least 32
    vit = _folder(tmp_path / "vit", size=(56, 56), per_class=2)
    assert _choice(vit, model="vit_tiny_patch16_224").contract.input_size % 16 == 0


def test_pretrained_weights_keep_their_contract_on_grey_data(tmp_path):
    data = _folder(tmp_path / "d", size=(20, 20), mode="L")
    choice = _choice(data, model="resnet18", pretrained="weights.pth")
    c = choice.contract
    assert (c.input_size, c.channels) == (224, 3)
    assert c.mean == pytest.approx((0.485, 0.456, 0.406))
    assert "pretrained" in choice.reason and "grey repeated to 3 channels" in choice.reason
    # the user's override still wins
    assert _choice(data, model="resnet18", pretrained="w.pth", img_size=64).contract.input_size == 64


def test_builtins_keep_their_stated_size():
    choice = _choice("digits")
    assert (choice.contract.input_size, choice.contract.channels) == (8, 1)


# ------------------------------------------------------------------------------ flip decisions
def _arrows(n_per_class, size=24, seed=0, symmetric=False):
    """Asymmetric: a bar with a blob at its left end (class 0) or right end (class 1), so a mirror
    swaps the classes. Symmetric: a horizontal bar (0) against a vertical one (1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            img = rng.integers(0, 40, (size, size), dtype=np.uint8)
            cy, cx = rng.integers(7, size - 7, 2)
            if symmetric and label == 1:
                img[cy - 6:cy + 6, cx - 1:cx + 2] = 255
            else:
                img[cy - 1:cy + 2, cx - 6:cx + 6] = 255
                if not symmetric:
                    end = cx - 6 if label == 0 else cx + 3
                    img[cy - 3:cy + 4, end:end + 3] = 255
            images.append(img)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).unsqueeze(1)
    return TensorSamples(x, torch.tensor(labels))


def test_flip_probe_turns_flips_off_when_mirroring_swaps_labels():
    contract = DataContract(input_size=24, channels=1, mean=(0.5,), std=(0.5,))
    d = flip_probe.decide_flips("auto", "auto", "light", _arrows(150), contract, 2, for_contract(contract))["hflip"]
    assert d.decided_by == "probe" and d.use is False
    assert d.evidence["accuracy"] > 0.9 and d.evidence["retention"] < 0.6
    assert d.evidence["swapped_classes"] == [(0, 1)]


def test_flip_probe_keeps_flips_when_labels_survive():
    contract = DataContract(input_size=24, channels=1, mean=(0.5,), std=(0.5,))
    d = flip_probe.decide_flips("auto", "auto", "light", _arrows(150, symmetric=True), contract, 2, for_contract(contract))["hflip"]
    assert d.decided_by == "probe" and d.use is True and d.evidence["retention"] >= 0.6


def test_flip_probe_time_reversal_on_clips():
    """Clips whose class is the direction of motion: playing them backwards swaps the labels."""
    from ocula.modality.video.moving_shapes import generate

    x, y, _ = generate(60, motion="vertical", frames=8, size=24, seed=0)
    clips = TensorSamples(torch.from_numpy(x).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(y))
    contract = DataContract(input_size=24, channels=3, frames=8)
    found = flip_probe.decide_flips("auto", "auto", "light", clips, contract, 2, for_contract(contract))
    assert found["time_flip"].use is False and found["time_flip"].evidence["swapped_classes"] == [(0, 1)]
    assert found["hflip"].use is True  # up/down survive a horizontal mirror


def test_user_setting_and_augment_none_skip_the_probe(monkeypatch):
    monkeypatch.setattr(flip_probe, "run_probe", lambda *a, **k: pytest.fail("probe ran"))
    contract = DataContract(input_size=8, channels=1)
    assert flip_probe.decide_flips(True, "auto", "light", None, contract, 2, for_contract(contract))["hflip"].decided_by == "user"
    assert flip_probe.decide_flips("auto", "auto", "none", None, contract, 2, for_contract(contract))["hflip"].use is False


def test_training_records_and_reuses_the_decision(tmp_path):
    import ocula

    run = ocula.train("digits", epochs=1, max_steps=2, out=str(tmp_path / "r"))
    data = json.loads((tmp_path / "r" / "data.json").read_text())
    assert data["flips"]["hflip"]["decided_by"] == "probe" and data["flips"]["hflip"]["use"] is False
    assert data["input"]["reason"].startswith("input 8×8×1")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["augment"]["hflip"] == "auto"  # the user's setting; the decision lives in data.json
    from ocula.engine.trainer import Trainer, load_run_config

    resumed = Trainer(load_run_config(run.dir, epochs=2))
    assert resumed.flips == data["flips"]


# ------------------------------------------------------------------------------ one preset definition
def _dot_folder(root, n=48, size=16):
    """Identical images with one bright dot left of centre: where it lands shows shift and flip."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    img = np.zeros((size, size), np.uint8)
    img[8, 4] = 255
    for i in range(n):
        Image.fromarray(img, "L").save(root / ("a" if i % 2 else "b") / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_ram_and_streamed_paths_draw_the_same_transforms(tmp_path, preset):
    from ocula.engine import setup

    root = _dot_folder(tmp_path / "dots")
    data = resolve_data(str(root), val_fraction=0)
    contract = DataContract(input_size=16, channels=1, mean=(0.0,), std=(1.0,))
    cfg = build_config(str(root), augment=preset, hflip=True, batch_size=16, workers=0)
    mixed = build_config(str(root), augment=preset, hflip=True, batch_size=16, workers=0, mixup=0.4)
    in_ram, _ = setup.to_memory(data.train, contract, build_config(str(root), cache="ram"), desc="t")
    assert isinstance(in_ram, TensorSamples) and isinstance(data.train, FileSamples)

    def columns(samples, epochs=20):
        xs = []
        for epoch in range(epochs):
            loader = setup.make_loader(samples, contract, cfg, train=True, num_classes=2, rank=0, world=1,
                                       epoch=epoch)
            xs += [batch[0].sum(-2).squeeze(1) for batch in loader]  # (B, W): the dot's mass by column
        mass = torch.cat(xs)
        seen = mass.sum(1) > 0.05  # erasing may hide the dot
        centre = (mass * torch.arange(16)).sum(1)[seen] / mass.sum(1)[seen]
        batch = next(iter(setup.make_loader(samples, contract, mixed, train=True, num_classes=2, rank=0, world=1)))
        return centre, batch[1].ndim == 2  # mixup gives soft targets on both paths

    ram, ram_soft = columns(in_ram)
    streamed, streamed_soft = columns(data.train)
    assert ram_soft and streamed_soft
    right = lambda c: float((c > 8).float().mean())  # noqa: E731 - mirrored dots land right of centre
    assert abs(right(ram) - right(streamed)) < 0.12
    assert abs(float(ram.std()) - float(streamed.std())) < 0.6
