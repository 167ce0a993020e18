"""The config in sections: flat keys at every door, nested in code and in config.json, files and recipes
filling the same structure, help text from field metadata."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from ocula.cli import build_parser, main
from ocula.config import (FLAT_KEYS, SECTIONS, TrainConfig, build_config, choices_of, list_recipes, load_recipe,
                          read_values)
from ocula.config_sections import TransferConfig, flat_key
from ocula.errors import OculaError


def test_flat_keys_are_unique_across_sections_and_each_is_a_train_option():
    keys = [flat_key(f) for cls in SECTIONS.values() for f in fields(cls)]
    assert len(keys) == len(set(keys)) == len(FLAT_KEYS) >= 52  # the 52 of issue 15, and any added since
    build_parser()
    from ocula.cli import SUBPARSERS

    options = SUBPARSERS["train"]._option_string_actions
    assert all(f"--{k.replace('_', '-')}" in options for k in keys if k != "data")
    assert FLAT_KEYS["lr"] == ("optim", "lr") and FLAT_KEYS["model"] == ("model", "name")


def test_code_reads_sections_and_flat_keys_still_work():
    cfg = build_config("digits", lr="0.1", epochs=3, model="vgg_bn", model_kwargs='{"width": 8}', hflip="false")
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.model.name, cfg.model.kwargs, cfg.augment.hflip) == (
        0.1, 3, "vgg_bn", {"width": 8}, False)
    assert cfg.data.source == "digits" and cfg.get("lr") == 0.1 and cfg.flat()["model"] == "vgg_bn"
    assert cfg.peak_lr == 0.1 and build_config("digits", optimizer="sgd", batch_size=128).peak_lr == 0.05
    changed = cfg.replace(seed=4)
    assert changed.run.seed == 4 and cfg.run.seed == 0 and changed.optim == cfg.optim


def test_saved_config_is_nested_and_old_flat_configs_still_load():
    cfg = build_config("digits", lr=0.1, strategy="llrd")
    nested = cfg.to_dict()
    assert nested["optim"]["lr"] == 0.1 and nested["transfer"]["strategy"] == "llrd" and "lr" not in nested
    assert TrainConfig.from_dict(nested) == cfg
    assert TrainConfig.from_dict(cfg.flat()) == cfg  # config.json of a run from before issue 15


def test_old_flat_run_config_resumes(tmp_path):
    from ocula.engine.trainer import load_run_config

    (tmp_path / "config.json").write_text(json.dumps(build_config("digits", epochs=2).flat()))
    cfg = load_run_config(str(tmp_path), epochs=5)
    assert cfg.optim.epochs == 5 and cfg.run.resume == str(tmp_path) and cfg.data.source == "digits"


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"lr": 0.2, "epochs": 4, "model": "vgg_bn"}'),
    (".json", '{"optim": {"lr": 0.2, "epochs": 4}, "model": {"name": "vgg_bn"}}'),
    (".yaml", "lr: 0.2\nepochs: 4\nmodel: vgg_bn\n"),
    (".yml", "optim:\n  lr: 0.2\n  epochs: 4\nmodel:\n  model: vgg_bn\n"),  # a section may use flat keys too
])
def test_config_file_flat_or_nested_json_or_yaml(tmp_path, suffix, text):
    path = tmp_path / f"options{suffix}"
    path.write_text(text)
    cfg = build_config("digits", config=str(path), epochs=6)  # the command line wins over the file
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.model.name) == (0.2, 6, "vgg_bn")


def test_config_file_over_recipe_and_unknown_keys_get_suggestions(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"recipe": "fmnist-fast", "epochs": 2}')
    cfg = build_config("digits", config=str(path))
    assert cfg.model.name == "vgg_bn" and cfg.optim.epochs == 2 and cfg.optim.optimizer == "sgd"
    for text, hint in [('{"lrr": 1}', "unknown option 'lrr' (did you mean: lr?)"),
                       ('{"optim": {"epoch": 1}}', "unknown option 'optim.epoch' (did you mean: epochs?)"),
                       ('{"optimm": {"lr": 1}}', "did you mean: optim"),
                       ('{"lr": "fast"}', "lr='fast': expected float")]:
        path.write_text(text)
        with pytest.raises(OculaError, match=hint.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            build_config("digits", config=str(path))
    with pytest.raises(OculaError, match="no such file"):
        build_config("digits", config=str(tmp_path / "none.yaml"))


def test_cli_config_option(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epoch: 1\n")
    assert main(["train", "digits", "--config", str(path)]) == 2
    assert "did you mean: epochs" in capsys.readouterr().err


def test_recipes_fill_the_same_structure():
    for name in list_recipes():
        assert TrainConfig.from_flat(**load_recipe(name)).optim.epochs >= 1
    assert read_values({"_doc": "x", "optim": {"lr": 1}}, "recipe") == {"lr": 1.0}


def test_help_comes_from_metadata_not_source(monkeypatch, capsys):
    import inspect

    def no_source(*a, **k):  # an install without .py files
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", no_source)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps lines, also at hyphens
    assert "peak; default: the rule of TrainConfig.peak_lr" in out and "auto | full | lp-ft | linear-probe | partial | llrd | gradual" in out
    assert "optim options:" in out


def test_choice_lists_are_declared_once():
    """Modules that branch on a choice read the tuple from the config field, never repeat it."""
    from pathlib import Path

    import ocula

    lists = [choices_of(TransferConfig, "strategy"), choices_of(TransferConfig, "margin"),
             choices_of(SECTIONS["optim"], "schedule"), choices_of(SECTIONS["data"], "balance")]
    root = Path(ocula.__file__).parent
    for path in root.rglob("*.py"):
        if path.name != "config_sections.py":
            text = path.read_text(encoding="utf-8")
            assert not [c for c in lists if repr(c) in text], path
    with pytest.raises(OculaError, match="did you mean: linear-probe"):
        build_config("digits", strategy="linear-prob")
