"""End to end on real data: train → files → load → predict → evaluate, through the Python API."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ocula
from ocula.errors import OculaError


def test_run_directory_is_complete_and_self_describing(digits_run):
    run = Path(digits_run)
    for name in ("config.json", "model.json", "metrics.csv", "curves.png", "split.json", "data.json",
                 "summary.json", "weights/best.safetensors", "weights/last.safetensors", "state/last.safetensors"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["arch"]["name"] == "seed_cnn" and meta["contract"]["channels"] == 1
    assert meta["contract"]["input_size"] == 8
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["val/accuracy"]) > 0.5  # 10 classes: chance is 0.1
    assert not list(run.rglob("*.tmp")), "atomic writes leave no temp files"


def test_weights_file_alone_predicts_like_the_run(digits_run, tmp_path):
    single = tmp_path / "model.safetensors"
    single.write_bytes((Path(digits_run) / "weights" / "best.safetensors").read_bytes())
    a, b = ocula.load(digits_run), ocula.load(single)
    x = np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)
    assert a.predict(x, topk=3).topk == b.predict(x, topk=3).topk


def test_predict_accepts_paths_pil_arrays_and_lists(digits_run, tmp_path):
    from ocula.data.builtin import load_builtin

    clf = ocula.load(digits_run)
    test = load_builtin("digits").test
    arrays = [test.images[i, 0].numpy() for i in range(20)]
    path = tmp_path / "digit.png"
    Image.fromarray(arrays[0]).save(path)
    from_array = clf.predict(arrays[0], topk=3)
    assert clf.predict(str(path), topk=3).label == from_array.label
    assert clf.predict(Image.fromarray(arrays[0])).label == from_array.label
    preds = clf.predict(arrays)
    assert len(preds) == 20 and all(p.label in clf.classes for p in preds)
    correct = sum(p.label == str(int(test.labels[i])) for i, p in enumerate(preds))
    assert correct >= 10
    assert abs(sum(q for _, q in from_array.topk) - 1) < 1  # top-3 of a distribution
    assert [q for _, q in from_array.topk] == sorted([q for _, q in from_array.topk], reverse=True)


def test_predict_reports_unreadable_inputs_and_continues(digits_run, tmp_path):
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    preds = list(ocula.predict(digits_run, [str(tmp_path), str(tmp_path / "missing.jpg")], workers=0))
    by_name = {Path(p.source).name: p for p in preds}
    assert by_name["broken.png"].error == "not an image"
    assert by_name["missing.jpg"].error == "no such file"
    assert by_name["ok.png"].label is not None


def test_evaluate_uses_test_split_and_writes_files(digits_run, tmp_path):
    report = ocula.evaluate(digits_run, "digits", out_dir=str(tmp_path / "ev"))
    assert report["split"] == "test" and report["n"] == 359
    assert 0.5 < report["accuracy"] <= 1 and report["top5"] >= report["accuracy"]
    assert len(report["per_class"]) == 10 and 0 <= report["ece"] <= 1
    for name in ("report.json", "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv"):
        assert (tmp_path / "ev" / name).is_file()


def test_evaluate_maps_classes_by_name_and_rejects_unknown(digits_run, tmp_path):
    from ocula.data.builtin import load_builtin

    test = load_builtin("digits").test
    for i in range(60):  # only classes 3 and 7, in a folder whose class order differs from the model's
        label = str(int(test.labels[i]))
        if label in ("3", "7"):
            (tmp_path / "sub" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(test.images[i, 0].numpy()).save(tmp_path / "sub" / label / f"{i}.png")
    report = ocula.evaluate(digits_run, str(tmp_path / "sub"), workers=0)
    assert report["n"] == sum(1 for _ in (tmp_path / "sub").rglob("*.png"))
    assert report["accuracy"] > 0.5
    (tmp_path / "sub" / "cat").mkdir()
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "sub" / "cat" / "x.png")
    with pytest.raises(OculaError, match="classes the model does not know: cat"):
        ocula.evaluate(digits_run, str(tmp_path / "sub"), workers=0)


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_folder_training_with_timm_model_skips_bad_files(tmp_path, cache):
    from tests.conftest import make_shapes_folder

    root = Path(make_shapes_folder(tmp_path / "shapes", per_class=10))
    (root / "circle" / "empty.png").write_bytes(b"")
    (root / "square" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    (root / ".DS_Store").write_bytes(b"junk")
    run = ocula.train(str(root), model="resnet18", img_size=32, epochs=1, batch_size=8, cache=cache, workers=0,
                      out=str(tmp_path / f"run-{cache}"), val_fraction=0.2)
    data = json.loads((Path(run.dir) / "data.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in data["skipped"]}
    assert skipped["empty.png"] == "empty file"
    assert "truncated.jpg" in skipped
    assert data["classes"] == ["circle", "square", "triangle"]
    assert run.summary["epochs_run"] == 1 and np.isfinite(run.summary["final"]["train_loss"])
    clf = run.load()
    assert clf.contract.channels == 3 and clf.contract.input_size == 32
    assert clf.predict(str(root / "circle" / "circle_000.png")).label in clf.classes


@pytest.mark.parametrize("options", [
    dict(model="vgg_bn", optimizer="sgd", schedule="onecycle", label_smoothing=0.1, clip_grad=1.0, lr=0.2),
    dict(augment="strong", mixup=0.2, cutmix=1.0, ema=0.9),
    dict(balance="sampler", schedule="constant", precision="fp32", channels_last=False),
    dict(balance="weighted-loss", accumulate=2, deterministic=True),
])
def test_engine_options_train_and_improve(tmp_path, options):
    options = {"model": "seed_cnn", **options}
    run = ocula.train("digits", epochs=3, batch_size=32, hflip=False, seed=1, out=str(tmp_path / "r"),
                      callbacks=[], **options)
    assert np.isfinite(run.summary["final"]["train_loss"])
    assert run.summary["final"]["val/accuracy"] > 0.3, run.summary


def test_one_optimizer_step_per_accumulation_cycle(tmp_path):
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer

    trainer = Trainer(build_config("digits", model="seed_cnn", epochs=1, batch_size=64, accumulate=4,
                                   out=str(tmp_path / "acc")), callbacks=[])
    calls = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    trainer.fit()
    micro_batches = len(trainer._train_loader(0))
    assert len(calls) == micro_batches // 4 == trainer.global_step


def test_user_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OculaError, match="no images found"):
        ocula.train(str(tmp_path / "empty"), epochs=1)
    with pytest.raises(OculaError, match="did you mean: resnet18"):
        ocula.train("digits", model="resnt18")
    with pytest.raises(OculaError, match="did you mean: epochs"):
        ocula.train("digits", epoch=3)
    with pytest.raises(OculaError, match="did you mean: digits"):
        ocula.train("digitz", epochs=1)
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "a.png")
    with pytest.raises(OculaError, match="only one class"):
        ocula.train(str(tmp_path / "one"), epochs=1)


def test_channels_last_bf16_matches_fp32_closely():
    from ocula.models import create_model

    torch.manual_seed(0)
    model = create_model("vgg_bn", 10, 1, 28).eval()
    x = torch.randn(4, 1, 28, 28)
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert (ref.argmax(1) == low.float().argmax(1)).float().mean() >= 0.75
    assert torch.allclose(ref, low.float(), atol=0.15, rtol=0.1)


def test_callbacks_without_a_checkpointer_warn_that_no_weights_are_written(tmp_path, capsys):
    """`callbacks=` replaces the defaults: a run given only its own callback says at once that it saves no model."""
    from ocula.engine.callbacks import Callback, Checkpointer

    ocula.train("digits", model="seed_cnn", epochs=1, max_steps=1, hflip=False, cross_fit="off", calibrate="none",
                out=str(tmp_path / "bare"), callbacks=[Callback()])
    assert "none of these saves weights" in capsys.readouterr().err
    ocula.train("digits", model="seed_cnn", epochs=1, max_steps=1, hflip=False, cross_fit="off", calibrate="none",
                out=str(tmp_path / "kept"), callbacks=[Checkpointer()])
    assert "none of these saves weights" not in capsys.readouterr().err
