"""engine.resolve: every auto/None of the config comes back as a value with its reason, once, and the run
writes them to RUN/resolved.json."""
from __future__ import annotations

import json

import torch

from ocula.config import build_config
from ocula.engine.resolve import USER, Choice, resolve
from ocula.modality import for_model
from ocula.modality.sources import resolve_data

AUTO_FIELDS = ("task", "model", "augment", "batch_size", "epochs", "strategy", "cross_fit", "peak_lr", "head_lr", "precision", "freeze_bn", "refit_head",
               "drop_path", "progressive")


def _resolve(**options):
    cfg = build_config("digits", model="seed_cnn", hflip=False, **options)
    splits = resolve_data(cfg.data.source, val_fraction=cfg.data.val_fraction, seed=0,
                          modality=for_model(cfg.model.name), task=cfg.task.name)
    return resolve(cfg, splits, device=torch.device("cpu"))


def test_every_auto_field_comes_back_as_a_value_with_its_reason():
    resolved = _resolve()
    choices = resolved.choices()
    assert set(choices) == set(AUTO_FIELDS)
    for name, choice in choices.items():
        assert isinstance(choice, Choice) and choice.reason and choice.decided_by, name
        assert choice.decided_by != USER, f"{name} was left to its default"
    assert resolved.task.value == "single-label" and resolved.augment.value == "light"
    assert resolved.strategy.value == "full" and resolved.refit_head.value is False
    assert resolved.cross_fit.value is None  # digits brings a validation split of its own
    assert resolved.batch_size.value == 64 == resolved.cfg.optim.batch_size  # 1,437 images: 8 steps of 64 and more
    cfg = resolved.cfg  # the values are written in: nothing downstream sees auto
    assert (cfg.augment.preset, cfg.transfer.strategy, cfg.task.name) == ("light", "full", "single-label")
    assert cfg.optim.lr == resolved.peak_lr.value == 3e-3 and cfg.run.precision == resolved.precision.value
    assert cfg.augment.hflip is False and resolved.flips["hflip"]["decided_by"] == "user"
    assert cfg.augment.progressive == resolved.progressive.value == 1.0  # only a detector resizes progressively
    assert resolved.input.reason.startswith("input 8×8×1") and resolved.contract.channels == 1
    assert resolved.given.augment.preset == "auto" and resolved.given.optim.lr is None  # the config as given
    json.dumps(resolved.to_dict())  # RUN/resolved.json is plain JSON


def test_small_data_from_scratch_gets_batches_that_make_an_epoch_several_steps(tmp_path):
    from PIL import Image

    for c in range(3):
        (tmp_path / "d" / str(c)).mkdir(parents=True)
        for i in range(50):
            Image.new("L", (8, 8), color=c * 80 + i).save(tmp_path / "d" / str(c) / f"{i}.png")
    cfg = build_config(str(tmp_path / "d"), model="seed_cnn", hflip=False)
    splits = resolve_data(cfg.data.source, val_fraction=0.1, seed=0, modality=for_model("seed_cnn"))
    resolved = resolve(cfg, splits, device=torch.device("cpu"))
    assert resolved.cross_fit.value is not None and len(resolved.train_samples) == 150  # every image, cross-fitted
    assert resolved.batch_size.value == 18 and resolved.batch_size.decided_by == "data"  # 150 // 8
    given = resolve(build_config(str(tmp_path / "d"), model="seed_cnn", hflip=False, batch_size=64), splits,
                    device=torch.device("cpu"))
    assert given.batch_size.value == 64 and given.batch_size.decided_by == USER


def test_lp_ft_of_a_timm_model_on_small_data_gets_drop_path_and_nothing_else_does():
    from ocula.engine.plan import SMALL_DATA_DROP_PATH
    from ocula.engine.resolve import _drop_path
    from ocula.models.registry import takes_drop_path

    lp_ft = build_config("digits", model="efficientnet_lite0", strategy="lp-ft")
    assert _drop_path(lp_ft, 300, cross_fitted=True).value == SMALL_DATA_DROP_PATH == 0.2
    assert "lp-ft on 300 training images, cross-fitted" in _drop_path(lp_ft, 300, cross_fitted=True).reason
    assert _drop_path(lp_ft, 300, cross_fitted=False).value is None  # a validation split of its own: as before
    assert _drop_path(lp_ft, 5000, cross_fitted=True).value is None  # enough data: the model's own default
    full = build_config("digits", model="efficientnet_lite0", strategy="full")
    assert _drop_path(full, 300, cross_fitted=True).value is None
    seed_cnn = build_config("digits", model="seed_cnn", strategy="lp-ft")
    assert _drop_path(seed_cnn, 300, cross_fitted=True).value is None  # not a timm model
    given = _drop_path(build_config("digits", model="efficientnet_lite0", strategy="lp-ft",
                                    model_kwargs={"drop_path_rate": 0.0}), 300, cross_fitted=True)
    assert (given.value, given.decided_by) == (0.0, USER)
    assert takes_drop_path("resnet18") and not takes_drop_path("vgg11") and not takes_drop_path("seed_cnn")


def test_values_set_in_the_config_are_kept_and_said_so():
    resolved = _resolve(lr=0.01, augment="none", precision="fp32", strategy="full", freeze_bn=False)
    for name in ("peak_lr", "augment", "precision", "strategy", "freeze_bn"):
        assert resolved.choices()[name].decided_by == USER, name
    assert (resolved.peak_lr.value, resolved.freeze_bn.value, resolved.precision.value) == (0.01, "never", "fp32")


def test_a_run_writes_its_resolved_config(tmp_path):
    import ocula

    run = ocula.train("digits", model="seed_cnn", epochs=1, max_steps=2, hflip=False, out=str(tmp_path / "r"),
                      callbacks=[])
    record = json.loads((tmp_path / "r" / "resolved.json").read_text())
    assert set(record["choices"]) == set(AUTO_FIELDS)
    assert all(c["reason"] and c["decided_by"] for c in record["choices"].values())
    assert record["config"]["optim"]["lr"] == record["choices"]["peak_lr"]["value"]
    given = json.loads((tmp_path / "r" / "config.json").read_text())
    assert given["optim"]["lr"] is None and given["augment"]["preset"] == "auto"  # config.json: as given
    assert run.summary["monitor"] == "val/accuracy" and run.summary["best_score"] is not None
