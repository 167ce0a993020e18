"""Batch-wise augmentation: exact pad-and-crop shifts, identical draws on every DDP rank."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ocula.data.batch_augment import BatchAugment, eval_resize, random_affine
from ocula.data.contract import DataContract
from ocula.data.loaders import TensorLoader
from ocula.data.samples import TensorSamples


def test_integer_shifts_equal_pad_and_crop():
    x = torch.randint(0, 255, (16, 1, 28, 28)).float()
    out = random_affine(x, 28, torch.Generator().manual_seed(0), translate_px=4, hflip=False)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(16):
        crops = [padded[i, :, 4 + dy:32 + dy, 4 + dx:32 + dx] for dy in range(-4, 5) for dx in range(-4, 5)]
        assert any(torch.equal(out[i], c) for c in crops)


def test_flip_is_exact_mirror():
    x = torch.randn(64, 3, 8, 8)
    out = random_affine(x, 8, torch.Generator().manual_seed(1), translate_px=0, scale=(1.0, 1.0), hflip=True)
    flipped = [torch.allclose(out[i], x[i].flip(-1), atol=1e-5) for i in range(64)]
    same = [torch.allclose(out[i], x[i], atol=1e-5) for i in range(64)]
    assert all(a or b for a, b in zip(flipped, same)) and 10 < sum(flipped) < 54


def test_ranks_see_slices_of_the_same_global_batch():
    samples = TensorSamples(torch.randint(0, 255, (100, 1, 12, 12), dtype=torch.uint8), torch.arange(100) % 4)
    contract = DataContract(12, 1, (0.5,), (0.5,))
    aug = BatchAugment(contract, "strong", num_classes=4, mixup=0.2)
    whole = list(TensorLoader(samples, contract, 20, train=True, augment=aug, seed=7))
    parts = [list(TensorLoader(samples, contract, 20, train=True, augment=aug, seed=7, rank=r, world=2))
             for r in range(2)]
    for b, (x, y, _) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][b][0], parts[1][b][0]]), x)
        assert torch.equal(torch.cat([parts[0][b][1], parts[1][b][1]]), y)


def test_epochs_differ_but_repeat_exactly():
    samples = TensorSamples(torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 2)
    contract = DataContract(8, 1, (0.5,), (0.5,))
    loader = TensorLoader(samples, contract, 10, train=True, augment=BatchAugment(contract, "light"), seed=1)
    first = [b[0] for b in loader]
    loader.set_epoch(1)
    second = [b[0] for b in loader]
    loader.set_epoch(0)
    again = [b[0] for b in loader]
    assert not torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_eval_resize_matches_resize_then_centre_crop():
    contract = DataContract(input_size=24, channels=1, mean=(0,), std=(1,), crop_pct=0.75)
    x = torch.rand(2, 1, 16, 16)
    out = eval_resize(x, contract)
    assert out.shape == (2, 1, 24, 24)
    full = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(out, full[..., 4:28, 4:28])
