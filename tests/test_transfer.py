"""Loading weights from anywhere (timm, training-script checkpoints, ocula runs), refusing code in
pickles, and the fine-tuning strategies, on tiny models and scikit-learn's digits."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch

from ocula.errors import OculaError
from ocula.models.registry import create_model
from ocula.engine.weights import load_weights, read_weights


class _RunsCode:
    """Unpickling this calls os.system: exactly what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def digits_base(tmp_path_factory) -> str:
    """A tiny vgg_bn trained on digits at 16 px: the 'pretrained' source of the fine-tuning tests."""
    import ocula
    from ocula.engine.callbacks import Checkpointer

    out = tmp_path_factory.mktemp("transfer") / "base"
    ocula.train("digits", model="vgg_bn", epochs=2, batch_size=64, hflip=False, img_size=16, out=str(out),
                model_kwargs={"width": 8}, seed=0, callbacks=[Checkpointer()])
    return str(out)


# ------------------------------------------------------------------------------ timm checkpoints
@pytest.mark.parametrize("name,size", [("resnet10t", 32), ("vit_tiny_patch16_224", 32)])
def test_timm_state_dict_loads_with_identical_logits(tmp_path, name, size):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    kw = {"img_size": size, "depth": 2} if "vit" in name else {}
    reference = timm.create_model(name, num_classes=7, **kw).eval()
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    # the layout of timm's train.py: nested, DDP prefix, argparse arguments, an EMA copy
    sd = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 3, "arch": name, "state_dict": sd, "state_dict_ema": sd,
                "args": argparse.Namespace(lr=0.1)}, tmp_path / "w.pth")
    x = torch.randn(2, 3, size, size)
    for file in ("w.safetensors", "w.pth"):
        model = create_model(name, 7, 3, size if "vit" in name else None, **({"depth": 2} if "vit" in name else {}))
        report = load_weights(model, tmp_path / file)
        assert report.loaded == report.total and not report.missing and not report.unexpected
        with torch.no_grad():
            assert (model.eval()(x) - reference(x)).abs().max() <= 1e-5
    assert read_weights(tmp_path / "w.pth").nested_key == "state_dict_ema"


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, capsys):
    from ocula.cli import main

    marker = tmp_path / "MARKER"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(OculaError, match="refused.*posix.system|refused.*os.system"):
        read_weights(tmp_path / "evil.pth")
    assert main(["train", "digits", "--epochs", "1", "--pretrained", str(tmp_path / "evil.pth"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocula: error:") and "refused" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def test_unknown_format_and_missing_file_are_one_line_errors(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"x")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    for path, match in [(tmp_path / "w.h5", "unknown weights format"), (tmp_path / "nope.pth", "no such"),
                        (tmp_path / "broken.pth", "not a readable")]:
        with pytest.raises(OculaError, match=match):
            read_weights(path)


# ------------------------------------------------------------------------------ adapting a source
def test_head_replaced_and_grey_input_conv_adapted_to_rgb(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    grey = create_model("vgg_bn", 10, 1, 16, width=8).eval()
    save_file(grey.state_dict(), tmp_path / "grey.safetensors")
    rgb = create_model("vgg_bn", 3, 3, 16, width=8)
    report = load_weights(rgb, tmp_path / "grey.safetensors")
    assert report.head_reset and report.adapted and not report.missing
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():  # timm's rule: repeat and divide by 3, so a grey picture in RGB gives the same features
        same = rgb.eval().forward_head(rgb.forward_features(x.expand(-1, 3, -1, -1)), pre_logits=True)
        assert torch.allclose(same, grey.forward_head(grey.forward_features(x), pre_logits=True), atol=1e-5)
    assert rgb.head.out_features == 3


def test_missing_and_unexpected_keys_are_reported_and_wrong_arch_refused(tmp_path):
    from safetensors.torch import save_file

    sd = create_model("seed_cnn", 10, 1, 16).state_dict()
    sd["extra.weight"] = torch.zeros(3)
    del sd["fc.1.bias"]
    save_file(sd, tmp_path / "w.safetensors")
    report = load_weights(create_model("seed_cnn", 10, 1, 16), tmp_path / "w.safetensors")
    assert report.missing == ["fc.1.bias"] and report.unexpected == ["extra.weight"]
    with pytest.raises(OculaError, match="do not fit|no tensor name"):
        load_weights(create_model("vgg_bn", 10, 1, 16, width=8), tmp_path / "w.safetensors")


# ------------------------------------------------------------------------------ fine-tuning
def _finetune(source, out, **kw):
    """A Trainer fine-tuning on digits for a few steps, without the files-and-plots callbacks."""
    from ocula.config import build_config
    from ocula.engine.trainer import Trainer

    cfg = build_config("digits", init_from=source, hflip=False, out=str(out), seed=1, **{"epochs": 1, **kw})
    trainer = Trainer(cfg, callbacks=[])
    trainer.fit()
    return trainer


def test_from_run_adopts_architecture_and_preprocessing(digits_base, tmp_path):
    trainer = _finetune(digits_base, tmp_path / "ft", max_steps=3)
    config = json.loads((tmp_path / "ft" / "resolved.json").read_text())["config"]  # config.json: as given
    source_contract = json.loads((Path(digits_base) / "model.json").read_text())["contract"]
    info = json.loads((tmp_path / "ft" / "transfer.json").read_text())
    assert config["model"]["name"] == "vgg_bn" and config["model"]["kwargs"]["width"] == 8
    assert info["contract"]["input_size"] == 16 and info["contract"]["mean"] == source_contract["mean"]
    assert trainer.contract.input_size == 16 and info["load"]["loaded"] == info["load"]["total"]
    assert trainer.history[0]["val/accuracy"] > 0.5  # the source's features already separate digits


def test_linear_probe_trains_only_the_head_and_keeps_bn_statistics(digits_base, tmp_path):
    from ocula.weights_file import load_tensors

    trainer = _finetune(digits_base, tmp_path / "lp", strategy="linear-probe", lr=0.01, max_steps=3)
    before = load_tensors(Path(digits_base) / "weights" / "best.safetensors")
    after = trainer.model.state_dict()
    changed = sorted(k for k in after if not torch.equal(before[k], after[k].cpu()))
    assert changed == ["head.bias", "head.weight"]  # running means and variances included


def test_strategies_groups_and_learning_rates():
    from ocula.engine.strategies import layer_groups, param_groups, set_trainable, trainable_stages

    model = create_model("vgg_bn", 10, 1, 16, width=8)
    groups = layer_groups(model)
    assert len(groups) == 4 and groups[-1] == ["head.bias", "head.weight"]  # 3 stages + head
    assert len(layer_groups(model, coarse=False)) == 7  # 6 conv blocks + head
    set_trainable(model, trainable_stages("partial", 3, 1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(groups[-1]) | set(groups[-2])
    for p in model.parameters():
        p.requires_grad_(True)
    llrd = param_groups(model, "llrd", 1e-3, 0.05, layer_decay=0.5, head_lr=1e-2)
    by_param = {id(p): g["lr"] for g in llrd for p in g["params"]}
    assert by_param[id(model.head.weight)] == pytest.approx(1e-2)
    assert by_param[id(model.features[0][0].weight)] == pytest.approx(1e-3 * 0.5 ** 6)
    assert [trainable_stages("gradual", 3, 1, e, 2) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_gradual_unfreezing_thaws_stages_during_training(digits_base, tmp_path):
    from ocula.engine.callbacks import Callback
    from ocula.engine.trainer import Trainer

    class Count(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen.append(sum(p.requires_grad for p in trainer.model.parameters()))

    from ocula.config import build_config

    seen: list = []
    cfg = build_config("digits", init_from=digits_base, strategy="gradual", epochs=3, hflip=False,
                       out=str(tmp_path / "g"), batch_size=512, val_fraction=0.0)
    Trainer(cfg, callbacks=[Count()]).fit()
    assert seen[0] == 2 and seen[0] < seen[1] < seen[2]  # head only, then one stage more per epoch


def test_plain_training_is_unchanged_when_nothing_is_set(tmp_path):
    from ocula.config import build_config
    from ocula.engine.optim import param_groups
    from ocula.engine.trainer import Trainer

    trainer = Trainer(build_config("digits", model="seed_cnn", out=str(tmp_path / "r")), callbacks=[])
    plain = param_groups(trainer.model, trainer.cfg.optim.weight_decay)
    assert [len(g["params"]) for g in trainer.optimizer.param_groups] == [len(g["params"]) for g in plain]
    assert all(p.requires_grad for p in trainer.model.parameters()) and trainer.transfer.callbacks() == []


def test_cli_from_alias_and_llrd_flags(digits_base, tmp_path, capsys):
    from ocula.cli import main

    out = tmp_path / "cli"
    assert main(["train", "digits", "--from", digits_base, "--strategy", "llrd", "--layer-decay", "0.5",
                 "--max-steps", "2", "--val-fraction", "0", "--hflip", "false", "--out", str(out)]) == 0
    info = json.loads((out / "transfer.json").read_text())
    lrs = sorted({g["lr"] for g in info["param_groups"]})
    assert info["strategy"] == "llrd" and lrs[0] == pytest.approx(1e-3 * 0.5 ** 6) and lrs[-1] == 1e-3
    assert "weights: loaded" in capsys.readouterr().out


# ------------------------------------------------------------------------------ probe and lp-ft
def test_lbfgs_probe_matches_scikit_learn_logistic_regression():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from ocula.engine.probe import fit_head
    from ocula.tasks.single_label import SingleLabelTask

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    weight, bias, steps, _ = fit_head(torch.tensor(x, dtype=torch.float32), torch.tensor(y), SingleLabelTask(), 10,
                                      c=0.5)
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-8).fit(x, y)
    ours = (torch.tensor(x, dtype=torch.float64) @ weight.T + bias).argmax(1).numpy()
    assert (ours == ref.predict(x)).mean() > 0.995 and 0 < steps <= 500
    # the same optimum: sklearn's coefficients are identifiable only up to a shift shared by the classes
    centred = (weight - weight.mean(0)).numpy()
    assert abs(centred - (ref.coef_ - ref.coef_.mean(0))).max() < 0.05 * abs(ref.coef_).max()


def test_linear_probe_is_one_fit_on_cached_features_with_no_epochs(digits_base, tmp_path):
    trainer = _finetune(digits_base, tmp_path / "lp1", strategy="linear-probe", epochs=5)
    info = json.loads((tmp_path / "lp1" / "transfer.json").read_text())
    assert len(trainer.history) == 1 and trainer.global_step == 0  # no optimizer step at all
    assert info["probe"]["images"] == len(trainer.train_samples) and info["probe"]["steps"] > 0
    assert trainer.history[0]["val/accuracy"] > 0.5
    sgd = _finetune(digits_base, tmp_path / "lp2", strategy="linear-probe", probe="sgd", max_steps=2)
    assert sgd.global_step == 2 and json.loads((tmp_path / "lp2" / "transfer.json").read_text())["probe"] is None


def test_auto_strategy_is_lp_ft_from_weights_and_full_from_scratch(digits_base, tmp_path):
    from ocula.config import LPFT_LR, build_config
    from ocula.engine.plan import resolve_strategy

    assert resolve_strategy(build_config("digits", init_from=digits_base)).transfer.strategy == "lp-ft"
    assert resolve_strategy(build_config("digits", init_from=digits_base), 10.0).transfer.strategy == "linear-probe"
    assert resolve_strategy(build_config("digits", init_from=digits_base), 30.0).transfer.strategy == "lp-ft"
    assert resolve_strategy(build_config("digits", pretrained="w.pth")).transfer.strategy == "lp-ft"
    assert resolve_strategy(build_config("digits")).transfer.strategy == "full"
    assert resolve_strategy(build_config("digits", init_from=digits_base, margin="arcface")).transfer.strategy == "full"
    assert build_config("digits", init_from=digits_base).peak_lr == LPFT_LR
    assert build_config("digits").peak_lr == 3e-3


def test_lp_ft_fits_the_head_first_then_trains_everything_with_batchnorm_held(digits_base, tmp_path):
    from ocula.weights_file import load_tensors

    trainer = _finetune(digits_base, tmp_path / "lpft", max_steps=3)  # no strategy given: auto
    info = json.loads((tmp_path / "lpft" / "transfer.json").read_text())
    assert info["strategy"] == "lp-ft" and info["probe"]["train_acc"] > 0.5
    assert info["trainable_params_at_start"] == info["params"]
    before = load_tensors(Path(digits_base) / "weights" / "best.safetensors")
    after = trainer.model.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k].cpu()) for k in stats)
    assert any(not torch.equal(before[k], after[k].cpu()) for k in after if k.endswith("weight") and "head" not in k)


def test_lp_ft_refits_the_saved_head_on_the_fine_tuned_features(digits_base, tmp_path):
    from ocula import bundle
    from ocula.config import build_config
    from ocula.engine.callbacks import Checkpointer
    from ocula.engine.head_refit import _features
    from ocula.engine.probe import fit_head, linear_head
    from ocula.engine.trainer import Trainer
    from ocula.weights_file import load_tensors

    out = tmp_path / "refit"
    cfg = build_config("digits", init_from=digits_base, hflip=False, out=str(out), seed=1, epochs=1, max_steps=3)
    trainer = Trainer(cfg, callbacks=[Checkpointer()])
    trainer.fit()
    record = json.loads((out / "head_refit.json").read_text())
    best = out / "weights" / "best.safetensors"
    assert record["images"] == len(trainer.train_samples) and record["val_acc_after"] is not None
    assert bundle.read_meta(best)["head_refit"]["kept"] == record["kept"]
    # what was saved is the L-BFGS optimum on the saved backbone's features, calibrated afterwards
    def distance_to_optimum(path):
        model, _ = bundle.load_model(path)
        feats, targets = _features(trainer, model, trainer.train_samples)
        weight, _, _, _ = fit_head(feats, targets, trainer.task, 10)
        head = linear_head(model).weight.detach().double()
        return float((head - weight.to(head)).abs().max() / weight.abs().max())

    assert record["kept"] and distance_to_optimum(best) < 0.02  # bf16 features
    calibration = json.loads((out / "calibration.json").read_text())
    assert set(calibration["bundles"]) == {"best", "last"}  # fitted after the refit, on the final heads
    assert set(load_tensors(best)) == set(trainer.model.state_dict())  # the head was replaced, not added
    off = Trainer(build_config("digits", init_from=digits_base, hflip=False, out=str(tmp_path / "off"), seed=1,
                               epochs=1, max_steps=3, refit_head=False), callbacks=[Checkpointer()])
    off.fit()
    assert not (tmp_path / "off" / "head_refit.json").exists()
    assert distance_to_optimum(tmp_path / "off" / "weights" / "best.safetensors") > 0.02  # SGD left it elsewhere


def test_auto_precision_fine_tunes_in_fp32_on_a_cpu_and_keeps_bf16_from_scratch(monkeypatch, digits_base, tmp_path):
    import torch

    from ocula.engine import setup

    cpu = torch.device("cpu")
    monkeypatch.setattr(setup, "has_fast_bf16", lambda device: True)
    assert setup.resolve_precision("auto", cpu) == torch.bfloat16
    assert setup.resolve_precision("auto", cpu, fine_tuning=True) is None
    assert setup.resolve_precision("bf16", cpu, fine_tuning=True) == torch.bfloat16  # asked for: kept
    trainer = _finetune(digits_base, tmp_path / "p", max_steps=1)
    assert trainer.autocast_dtype is None and trainer.summary()["precision"] == "fp32"


def test_lbfgs_probe_without_a_linear_head_is_a_one_line_error(digits_base, tmp_path):
    with pytest.raises(OculaError, match="--probe sgd"):
        _finetune(digits_base, tmp_path / "m", strategy="linear-probe", margin="cosface")


def test_foreign_weights_with_the_default_model_say_to_pass_model(tmp_path):
    from safetensors.torch import save_file

    from ocula.config import build_config
    from ocula.engine.trainer import Trainer

    save_file({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(OculaError, match="pass --model"):
        Trainer(build_config("digits", pretrained=str(tmp_path / "other.safetensors"), out=str(tmp_path / "r")),
                callbacks=[])


def test_few_images_from_weights_fit_a_probe_on_all_of_them(digits_base, tmp_path):
    from PIL import Image

    from ocula.config import build_config
    from ocula.data.builtin import load_builtin
    from ocula.engine.trainer import Trainer

    digits = load_builtin("digits")
    for c in range(10):  # 5 images per class: a 10 % hold-out would keep 5 images, too few to calibrate
        (tmp_path / "few" / str(c)).mkdir(parents=True)
        for i in (digits.train.labels == c).nonzero().flatten()[:5].tolist():
            Image.fromarray(digits.train.images[i, 0].numpy()).save(tmp_path / "few" / str(c) / f"{i}.png")
    cfg = build_config(str(tmp_path / "few"), init_from=digits_base, hflip=False, out=str(tmp_path / "r"))
    trainer = Trainer(cfg, callbacks=[])
    assert trainer.cfg.transfer.strategy == "linear-probe" and trainer.val_samples is None
    assert len(trainer.train_samples) == 50
    trainer.fit()
    assert trainer.transfer.probe.images == 50 and trainer.global_step == 0


def test_cpu_bf16_is_chosen_by_a_measured_step_not_by_the_flags(monkeypatch):
    """An EPYC with AVX512-BF16 and no AMX was seen beside AMX Xeons: the flags say bf16 exists, the measured
    step says whether it pays."""
    import torch

    from ocula.config import build_config
    from ocula.engine import resolve, setup

    cpu = torch.device("cpu")
    cfg = build_config(data="digits", model="seed_cnn")
    assert setup.cpu_bf16_speedup() > 0  # the real measurement runs here (emulated bf16 where the CPU lacks it)
    monkeypatch.setattr(setup, "cpu_flags", lambda: {"avx2"})
    assert not setup.has_fast_bf16(cpu) and setup.resolve_precision("auto", cpu) is None
    monkeypatch.setattr(setup, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(setup, "cpu_bf16_speedup", lambda: 0.8)
    assert setup.resolve_precision("auto", cpu) is None
    slow = resolve._precision(cfg, cpu)
    assert slow.value == "fp32" and "0.80×" in slow.reason and "BF16_MIN_SPEEDUP" in slow.reason
    monkeypatch.setattr(setup, "cpu_bf16_speedup", lambda: 1.9)
    assert setup.resolve_precision("auto", cpu) == torch.bfloat16
    fast = resolve._precision(cfg, cpu)
    assert fast.value == "bf16" and "1.90×" in fast.reason
