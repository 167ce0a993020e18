"""Cross-fitting for small data (issue 23): decisions on out-of-fold predictions, then every image trained on."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

import ocula
from ocula import bundle
from ocula.engine.cross_fit import CrossFitPlan, CrossFitResult, _choose
from ocula.errors import OculaError
from ocula.inference.scoring import labelled_split
from ocula.tasks.multilabel import MultiLabelTask
from ocula.tasks.single_label import SingleLabelTask


def write_digits_folder(root, per_class: int, val_per_class: int = 0):
    """A class-per-folder tree of real digits (8×8 grey PNGs): `per_class` in train/, optionally val/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        for split, chosen in (("train", idx[:per_class]), ("val", idx[per_class:per_class + val_per_class])):
            for i in chosen:
                (root / split / str(c)).mkdir(parents=True, exist_ok=True)
                Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(root / split / str(c) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("small") / "digits", per_class=15)


def test_a_small_folder_is_cross_fitted_then_trained_on_every_image(small_digits, tmp_path):
    out = tmp_path / "run"
    run = ocula.train(str(small_digits / "train"), model="seed_cnn", epochs=3, out=str(out), seed=0)
    record = json.loads((out / "cross_fit.json").read_text())
    assert record["folds"] == 5 and record["images"] == 150 and len(record["fold_s"]) == 5
    assert 1 <= record["best_epoch"] <= 3 and record["last_epoch"] == 3
    assert set(record["scores"]) >= {"1/plain", "2/plain", "3/plain"}
    held = np.load(out / "cross_fit" / "held_out.npz")
    assert sorted(np.bincount(held["groups"])) == [30] * 5  # every image held out exactly once, stratified
    split = json.loads((out / "split.json").read_text())
    assert split["counts"] == {"train": 150}  # nothing carved: the shipped model saw every image
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["split"].startswith("out-of-fold") and calibration["samples"] == 150
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [float(r["val/accuracy"]) for r in rows] == pytest.approx(
        [record["scores"][f"{e}/plain"] for e in (1, 2, 3)], rel=1e-4)
    meta = bundle.read_meta(out / "weights" / "best.safetensors")
    assert meta["cross_fit"].startswith("cross-fit: 5 folds") and meta["best_epoch"] == record["best_epoch"]
    assert run.summary["cross_fit"] == record["summary"]
    clf = ocula.load(run.dir)  # the same folder has no unseen image left: evaluate says so, with the out-of-fold score
    with pytest.raises(OculaError, match="trained on all of it .cross-fit: 5 folds"):
        labelled_split(clf, str(small_digits / "train"))
    assert labelled_split(clf, str(small_digits / "train"), fidelity=True).name.startswith("all")  # the int8 gate


def test_the_first_fold_is_timed_and_the_folds_cut_to_the_budget(small_digits, tmp_path, monkeypatch):
    from ocula.engine import cross_fit

    monkeypatch.setattr(cross_fit, "BUDGET_S", 1e-6)  # any fold is over budget: one fold, then the final run
    out = tmp_path / "cut"
    ocula.train(str(small_digits / "train"), model="seed_cnn", epochs=1, out=str(out))
    record = json.loads((out / "cross_fit.json").read_text())
    assert len(record["fold_s"]) == 1 and record["images"] == 30  # the one held-out fold decides
    assert not (out / "cross_fit" / "fold-2").exists()
    assert json.loads((out / "split.json").read_text())["counts"] == {"train": 150}


def test_off_or_a_given_validation_split_keep_the_carved_or_given_split(tmp_path):
    data = write_digits_folder(tmp_path / "d", per_class=6, val_per_class=3)
    ocula.train(str(data / "train"), model="seed_cnn", epochs=1, out=str(tmp_path / "off"), cross_fit="off")
    assert not (tmp_path / "off" / "cross_fit.json").exists()
    assert json.loads((tmp_path / "off" / "split.json").read_text())["val_from"] == "stratified"
    ocula.train(str(data), model="seed_cnn", epochs=1, out=str(tmp_path / "given"))
    assert not (tmp_path / "given" / "cross_fit.json").exists()  # the data brought its own validation split


def test_lp_ft_chooses_the_refit_on_out_of_fold_predictions(digits_run, small_digits, tmp_path):
    out = tmp_path / "lpft"
    ocula.train(str(small_digits / "train"), init_from=digits_run, strategy="lp-ft", epochs=2, out=str(out),
                cross_fit=3, seed=0)
    record = json.loads((out / "cross_fit.json").read_text())
    assert record["folds"] == 3 and "0/plain" in record["scores"]  # the probe's own out-of-fold score
    transfer = json.loads((out / "transfer.json").read_text())
    if record["probe_only"]:
        assert transfer["strategy"] == "lp-ft" and not (out / "head_refit.json").exists()
        assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1
    else:
        assert {"2/plain", "2/refit"} <= set(record["scores"]) and record["refit"] in (True, False)
        refit = json.loads((out / "head_refit.json").read_text()) if record["refit"] else None
        assert refit is None or "cross-fit" in refit["reason"]
    assert json.loads((out / "calibration.json").read_text())["samples"] == 150


def test_folds_are_stratified_and_cover_every_sample_once():
    labels = np.repeat(np.arange(4), [10, 10, 5, 7])
    folds = SingleLabelTask().cross_fit_folds(labels, 5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))
    for train, h in folds:
        assert not set(train) & set(h) and {int(labels[i]) for i in h} == {0, 1, 2, 3}
    sets = np.array([[1, 0], [0, 1], [1, 1]] * 10)
    folds = MultiLabelTask(2).cross_fit_folds(sets, 3, seed=1)
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(30))
    for _, h in folds:  # label-set aware: each fold holds about a third of each label's positives
        assert all(6 <= n <= 8 for n in sets[h].sum(0))


def test_the_choice_takes_the_latest_epoch_within_one_standard_error_and_drops_a_worse_refit():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    labels = rng.integers(0, k, n)

    def logits(accuracy):
        z = rng.normal(0, 1, (n, k)).astype(np.float32)
        right = np.zeros(n, dtype=bool)
        right[rng.permutation(n)[:round(accuracy * n)]] = True  # exactly this accuracy
        z[np.arange(n), labels] += np.where(right, 6.0, -6.0)
        return z

    stub = SimpleNamespace(task=SingleLabelTask(), classes=[str(c) for c in range(k)])
    found = {1: {"plain": logits(0.5), "refit": logits(0.5)}, 2: {"plain": logits(0.90), "refit": logits(0.80)},
             3: {"plain": logits(0.89), "refit": logits(0.78)}, 0: {"plain": logits(0.6)}}
    result = _choose(stub, CrossFitPlan(5, "test"), labels, labels % 5, found, refit=True, fold_s=[1.0])
    # refit scores: 0.5, 0.8, 0.78 → epoch 3 is within one SE of epoch 2; the refit then loses to the plain head
    assert result.best_epoch == 3 and result.refit is False and not result.probe_only
    assert result.held_out("best")[0] is found[3]["plain"]
    found[0] = {"plain": logits(0.99)}
    assert _choose(stub, CrossFitPlan(5, "test"), labels, labels % 5, found, refit=True, fold_s=[1.0]).probe_only


def test_cross_fit_values_are_checked():
    from ocula.config import build_config

    assert build_config("digits", cross_fit=3).data.cross_fit == "3"
    with pytest.raises(OculaError, match="cross_fit"):
        build_config("digits", cross_fit="many")
    with pytest.raises(OculaError, match="cross_fit"):
        build_config("digits", cross_fit=1)


def test_folds_never_outnumber_the_smallest_class(tmp_path, capsys):
    """3 images a class: auto cross-fits with 3 folds (scikit-learn's stratified folds refuse 5, which
    was a ValueError traceback); an asked-for 5 is a one-line error."""
    from ocula.cli import main

    data = write_digits_folder(tmp_path / "d", per_class=3)
    ocula.train(str(data / "train"), model="seed_cnn", epochs=1, out=str(tmp_path / "auto"))
    record = json.loads((tmp_path / "auto" / "cross_fit.json").read_text())
    assert record["folds"] == 3 and "smallest class has 3 images" in record["reason"]
    assert main(["train", str(data / "train"), "--model", "seed_cnn", "--epochs", "1", "--cross-fit", "5",
                 "--out", str(tmp_path / "five")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("a class has only 3 training images" in line for line in err) and "Traceback" not in "\n".join(err)


def test_a_probe_only_summary_counts_held_out_images_not_the_training_set():
    """A budget-cut plan holds out only some images (3 of 5 folds: 126 of 210): the summary says they were
    held out, and that the shipped probe fits every training image, not "all 126"."""
    labels = np.zeros(126, dtype=np.int64)
    result = CrossFitResult(CrossFitPlan(5, "small", 1800.0), labels, labels, {}, 1, 10, True, probe_only=True,
                            scores={"0/plain": 1.0}, fold_s=[300.0, 270.0, 350.0])
    text = result.summary()
    assert "out of fold on 126 images" in text and "every training image" in text and "all 126" not in text


def test_cross_fitted_lp_ft_of_a_timm_model_trains_with_drop_path_and_ships_it(small_digits, tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet", num_classes=7).state_dict().items()},
              str(weights))
    out = tmp_path / "dp"
    run = ocula.train(str(small_digits / "train"), model="test_efficientnet", pretrained=str(weights), epochs=1,
                      strategy="lp-ft", cross_fit=2, img_size=32, out=str(out), seed=0)
    choice = json.loads((out / "resolved.json").read_text())["choices"]["drop_path"]
    assert (choice["value"], choice["decided_by"]) == (0.2, "rule") and "cross-fitted" in choice["reason"]
    fold = json.loads((out / "cross_fit" / "fold-1" / "resolved.json").read_text())["choices"]["drop_path"]
    assert fold["value"] == 0.2  # the folds train the recipe the final run ships
    clf = ocula.load(run.dir)
    assert clf.meta["arch"]["kwargs"]["drop_path_rate"] == 0.2
    assert any(type(m).__name__ == "DropPath" for m in clf.model.modules()) and not clf.model.training
    assert clf.predict(str(next((small_digits / "train" / "3").iterdir())))  # the bundle rebuilds and predicts
