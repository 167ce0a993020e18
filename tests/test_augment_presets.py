"""The torchvision-recipe presets (rrc, randaugment, trivialaugment), batch-wise (issue 27)."""
from __future__ import annotations

import json

import pytest
import torch

from ocula.data.batch_augment import BatchAugment, random_resized_crop
from ocula.data.contract import DataContract
from ocula.errors import OculaError

PRESETS = ("rrc", "randaugment", "trivialaugment")


def _batch(channels: int, n: int = 24, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def _contract(channels: int, size: int = 16) -> DataContract:
    return DataContract(size, channels, (0.5,) * channels, (0.25,) * channels)  # not 0/1: normalisation matters


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_keep_shapes_repeat_under_a_seed_and_change_images(preset, channels):
    x, contract = _batch(channels), _contract(channels)
    aug = BatchAugment(contract, preset, hflip=True)
    out, y = aug(x, torch.arange(24), torch.Generator().manual_seed(3))
    assert out.shape == (24, channels, 16, 16) and out.dtype == torch.float32 and torch.equal(y, torch.arange(24))
    again, _ = aug(x, torch.arange(24), torch.Generator().manual_seed(3))
    other, _ = aug(x, torch.arange(24), torch.Generator().manual_seed(4))
    assert torch.equal(out, again) and not torch.equal(out, other)
    plain, _ = BatchAugment(contract, "none")(x, torch.arange(24), None)
    changed = [(out[i] - plain[i]).abs().max() > 1e-4 for i in range(24)]
    assert sum(changed) >= 20  # nearly every image moves (a crop can draw the whole image, unflipped)
    low, high = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25  # the data's normalisation, pixels stay in range
    assert out.min() >= low - 1e-5 and out.max() <= high + 1e-5
    assert preset in aug.describe() and ("horizontal flip" in aug.describe())


def test_policies_change_pixels_beyond_the_crop():
    x, contract = _batch(3), _contract(3)
    crop, _ = BatchAugment(contract, "rrc")(x, torch.zeros(24), torch.Generator().manual_seed(5))
    for preset in ("randaugment", "trivialaugment"):  # the same generator draws the same crops first
        out, _ = BatchAugment(contract, preset)(x, torch.zeros(24), torch.Generator().manual_seed(5))
        assert sum((out[i] - crop[i]).abs().max() > 1e-4 for i in range(24)) >= 12, preset


def test_full_crop_is_the_image_or_its_mirror_and_hflip_off_never_mirrors():
    x = _batch(1, n=64).float()
    gen = torch.Generator().manual_seed(0)
    out = random_resized_crop(x, 16, gen, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True)
    same = [torch.allclose(out[i], x[i], atol=1e-3) for i in range(64)]
    mirrored = [torch.allclose(out[i], x[i].flip(-1), atol=1e-3) for i in range(64)]
    assert all(a or b for a, b in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    kept = random_resized_crop(x, 16, gen, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    assert torch.allclose(kept, x, atol=1e-3)


def test_crops_resample_inside_the_image():
    ramp = torch.arange(32.0).repeat(32, 1).expand(40, 1, 32, 32)  # value = column
    out = random_resized_crop(ramp, 8, torch.Generator().manual_seed(1), hflip=False)
    steps = out[..., 1:] - out[..., :-1]
    assert out.min() >= 0 and out.max() <= 31  # border-clamped, no zero padding
    assert (steps >= -1e-4).all() and (steps.amax((1, 2, 3)) > 0).all()  # an unmirrored, stretched crop
    widths = out[..., -1].mean((1, 2)) - out[..., 0].mean((1, 2))
    assert widths.std() > 1  # crop sizes differ per image


def test_batched_policy_equals_torchvision_on_each_image():
    from ocula.data.policies import BatchPolicy

    x = _batch(3, n=96, size=20)
    for name in ("randaugment", "trivialaugment"):
        policy = BatchPolicy(name)
        draws = policy.draw(96, torch.Generator().manual_seed(2))
        out = policy.apply(x, draws)
        assert {policy.ops[int(i)] for d in draws for i in d.op} == set(policy.ops)  # every operation drawn
        for i in range(96):
            one = x[i:i + 1]
            for d in draws:
                op = policy.ops[int(d.op[i])]
                magnitude = policy._magnitude(op, int(d.bin[i]), bool(d.negative[i]), 20, 20)
                if magnitude is not None:
                    one = policy.tv._apply_image_or_video_transform(one, op, magnitude,
                                                                    interpolation=policy.tv.interpolation,
                                                                    fill=policy.tv._fill)
            assert torch.equal(out[i:i + 1], one), (name, i)


def test_clips_get_one_draw_for_all_their_frames():
    from ocula.modality.video.augment import ClipAugment

    frame = _batch(3, n=6)
    clips = frame.unsqueeze(1).expand(6, 4, 3, 16, 16).contiguous()  # 4 identical frames per clip
    contract = DataContract(16, 3, (0.5,) * 3, (0.25,) * 3, frames=4)
    out, _ = ClipAugment(contract, "trivialaugment")(clips, torch.zeros(6), torch.Generator().manual_seed(0))
    assert out.shape == (6, 4, 3, 16, 16)
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(4))


def test_policies_refuse_other_channel_counts():
    with pytest.raises(OculaError, match="1 or 3 channels"):
        BatchAugment(_contract(2), "randaugment")
    BatchAugment(_contract(2), "rrc")  # geometry alone takes any channels


@pytest.mark.parametrize("preset", PRESETS)
def test_a_short_run_trains_with_each_preset(preset, tmp_path):
    import ocula

    run = ocula.train("digits", model="seed_cnn", epochs=1, max_steps=2, batch_size=32, augment=preset,
                      hflip=False, calibrate="none", out=str(tmp_path / preset), callbacks=[])
    record = json.loads((tmp_path / preset / "resolved.json").read_text())
    assert record["config"]["augment"]["preset"] == preset and run.summary["best_score"] is not None
