"""The command line's surface (issue 27): --flag/--no-flag, help on every option, exit codes, --version,
--device, --providers, and the README's table of every command. Parse-only where the behaviour is the
parsing; the rest patches the one function a command calls, or runs on tiny inputs."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ocula import cli
from ocula.cli import build_parser, main
from ocula.cli_train import split_overrides
from ocula.errors import ExitCode, GateFailed, OculaError

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    return build_parser().parse_args(list(argv))


def all_options():
    """(command, action) for every argument of every command, the top-level parser's as command ''."""
    parser = build_parser()
    found = [("", a) for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    for name, sub in cli.SUBPARSERS.items():
        found += [(name, a) for a in sub._actions]
    return [(c, a) for c, a in found if not isinstance(a, argparse._HelpAction)]


# ---------------------------------------------------------------------- help text
def test_every_option_of_every_command_has_help():
    missing = [f"{c} {a.option_strings or a.dest}" for c, a in all_options()
               if a.help != argparse.SUPPRESS and not (a.help or "").strip()]
    assert not missing, "options without help:\n" + "\n".join(missing)
    bare = [a.option_strings[0] for c, a in all_options() if c == "train" and (a.help or "").startswith("(")]
    assert not bare, f"train options whose help is only their default (config_sections metadata): {bare}"


def test_every_command_has_a_one_line_summary():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {c.dest for c in sub._choices_actions} == set(cli.SUBPARSERS)
    assert all(c.help and c.help.strip() for c in sub._choices_actions)


# ---------------------------------------------------------------------- --flag / --no-flag
@pytest.mark.parametrize("argv, want", [
    ([], {}),
    (["--hflip"], {"hflip": True}),  # alone: true, as before
    (["--no-hflip"], {"hflip": False}),
    (["--hflip", "auto"], {"hflip": "auto"}),  # still a value: auto | true | false
    (["--hflip", "false"], {"hflip": "false"}),
    (["--no-time-flip"], {"time_flip": False}),
    (["--report"], {"report": True}),
    (["--no-report"], {"report": False}),
    (["--no-channels-last", "--deterministic"], {"channels_last": False, "deterministic": True}),
    (["--compile", "--no-compile"], {"compile": False}),  # the last one wins
    (["--no-pretrained"], {"pretrained": False}),
    (["--pretrained", "w.pth"], {"pretrained": "w.pth"}),
    (["--no-refit-head"], {"refit_head": False}),
])
def test_train_booleans_have_a_negative(argv, want):
    assert split_overrides(parse("train", "digits", *argv)) == want


def test_a_negative_takes_no_value_so_data_may_follow_it():
    assert parse("train", "--no-hflip", "--no-report", "digits").data == "digits"


def test_train_booleans_reach_the_config_typed():
    from ocula.config import build_config

    cfg = build_config("digits", **split_overrides(parse("train", "--no-hflip", "--no-report", "--hflip", "auto",
                                                         "--deterministic", "digits")))
    assert cfg.augment.hflip == "auto" and cfg.run.report is False and cfg.run.deterministic is True


def test_a_bare_switch_takes_no_value(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "digits", "--report", "false"])  # a plain bool is --report / --no-report
    assert e.value.code == ExitCode.USER
    assert "(--report takes no value: --report turns it on, --no-report off)" in capsys.readouterr().err


@pytest.mark.parametrize("command, flag, dest", [
    (["evaluate", "RUN", "DATA"], "tta", "tta"),
    (["models"], "own", "own"),
    (["export", "RUN"], "int8", "int8"),
    (["serve", "RUN"], "onnx", "onnx"),
    (["serve", "RUN"], "access-log", "access_log"),
    (["runs"], "reverse", "reverse"),
    (["datasets", "make", "photo-objects", "OUT"], "hostile", "hostile"),
])
def test_other_commands_switches_have_a_negative(command, flag, dest):
    assert getattr(parse(*command), dest) is False
    assert getattr(parse(*command, f"--{flag}"), dest) is True
    assert getattr(parse(*command, f"--{flag}", f"--no-{flag}"), dest) is False


# ---------------------------------------------------------------------- exit codes
def test_exit_codes_are_the_documented_ones():
    assert [int(c) for c in (ExitCode.OK, ExitCode.INTERNAL, ExitCode.USER, ExitCode.GATE,
                             ExitCode.INTERRUPTED)] == [0, 1, 2, 3, 130]
    assert OculaError("x").exit_code == 2 and GateFailed("x").exit_code == 3 and isinstance(GateFailed("x"), OculaError)
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", doc, re.M), f"docs/cli.md does not document exit code {int(code)}"


def test_user_error_exits_2_with_one_line(capsys):
    assert main(["evaluate", "RUN", "DATA", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ocula: error: --device 'gpu': expected auto, cpu, cuda or cuda:N"
    with pytest.raises(SystemExit) as e:  # argparse's own errors are 2 too
        main(["evaluate", "RUN"])
    assert e.value.code == 2


def test_a_failed_export_gate_exits_3(monkeypatch, capsys):
    """`export_model` and the gate's print-out are stood in for (the real gate failing: tests/test_export.py)."""
    import types

    gate = {"passed": False, "size_bytes": 1000, "reason": "accuracy gate failed: dropped 10 points"}
    result = types.SimpleNamespace(files={"fp32": "m.onnx"}, gates={"fp32": gate}, reports={"fp32": "m.gate.json"},
                                   passed=False, reason=f"fp32: {gate['reason']}")
    monkeypatch.setitem(sys.modules, "ocula.export.pipeline",
                        types.SimpleNamespace(export_model=lambda *a, **k: result))
    monkeypatch.setitem(sys.modules, "ocula.export.gate",
                        types.SimpleNamespace(format_gate=lambda g: "PASS" if g["passed"] else "FAIL"))
    assert main(["export", "RUN"]) == 3
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert captured.err.strip() == "ocula: error: fp32: accuracy gate failed: dropped 10 points"
    result.passed = gate["passed"] = True
    assert main(["export", "RUN"]) == 0 and "PASS" in capsys.readouterr().out


def test_verify_says_different_with_3_not_an_error_code(monkeypatch, capsys):
    import types

    verdict = {"same": False, "score": 0.1, "threshold": 0.5}  # verify_pair's answer, stood in for
    monkeypatch.setitem(sys.modules, "ocula.transfer.verify",
                        types.SimpleNamespace(verify_pair=lambda *a, **k: verdict, calibrate=None))
    assert main(["verify", "RUN", "a.png", "b.png"]) == ExitCode.GATE
    captured = capsys.readouterr()
    assert captured.out.startswith("different") and not captured.err


def test_internal_error_exits_1_one_line_and_the_traceback_only_with_verbose(monkeypatch, tmp_path, capsys):
    def boom(args):
        raise ValueError("a bug\nover two lines")

    build_parser()
    monkeypatch.setitem(cli.COMMANDS, "recipes", boom)
    monkeypatch.setenv("OCULA_CRASH_DIR", str(tmp_path))
    monkeypatch.delenv("OCULA_DEBUG", raising=False)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ocula: error: internal error: ValueError: a bug (details in ")
    assert main(["recipes", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "over two lines" in err
    assert err.strip().splitlines()[-1].startswith("ocula: error: internal error: ValueError: a bug")
    main(["recipes"])  # back to the default level for the tests after this one
    capsys.readouterr()


def test_interrupted_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    build_parser()
    monkeypatch.setitem(cli.COMMANDS, "recipes", interrupted)
    assert main(["recipes"]) == 130 and capsys.readouterr().err.strip() == "ocula: interrupted"


# ---------------------------------------------------------------------- --version
def test_version_lists_ocula_and_its_libraries_without_importing_torch():
    code = ("import sys; from ocula.cli import main; rc = main(['--version']); "
            "print('imported torch' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = [line.split()[0] for line in lines[:-1]]
    from importlib import metadata

    import ocula

    assert lines[0] == f"ocula {ocula.__version__}" and names[:5] == ["ocula", "python", "torch", "torchvision", "timm"]
    assert f"torch {metadata.version('torch')}" in lines and f"timm {metadata.version('timm')}" in lines
    assert ("onnxruntime" in names) == _installed("onnxruntime")
    assert lines[-1] == "no torch"


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


# ---------------------------------------------------------------------- --device
@pytest.mark.parametrize("text, ok", [("auto", True), ("cpu", True), ("cuda", True), ("cuda:1", True),
                                      ("gpu", False), ("cuda:x", False), ("CPU ", False)])
def test_device_spelling_is_checked_while_parsing(text, ok):
    from ocula.inference.device import check_device

    if ok:
        assert parse("evaluate", "RUN", "DATA", "--device", text).device == text
        assert parse("serve", "RUN", "--device", text).device == text
    else:
        with pytest.raises(OculaError, match="expected auto, cpu, cuda or cuda:N"):
            check_device(text)


def test_a_device_this_machine_lacks_is_a_user_error(capsys):
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["evaluate", "RUN", "DATA", "--device", f"cuda:{have}"]) == 2
    assert f"this machine has {have} CUDA device" in capsys.readouterr().err


def test_evaluate_runs_on_the_device_asked_for(digits_run, capsys):
    assert main(["evaluate", digits_run, "digits", "--device", "cpu", "--json", "-", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 359


def test_evaluate_passes_the_device_to_the_load(monkeypatch):
    from ocula import api

    seen = {}

    def load(path, device="auto"):
        seen["device"] = device
        raise OculaError("stop here")

    monkeypatch.setattr(api, "load", load)
    assert main(["evaluate", "RUN", "DATA", "--device", "cpu"]) == 2 and seen == {"device": "cpu"}
    assert main(["evaluate", "RUN", "DATA"]) == 2 and seen == {"device": "auto"}


def test_serve_passes_device_and_providers_where_they_apply(monkeypatch, capsys):
    from ocula.serve import runner

    calls = []
    monkeypatch.setattr(runner, "serve", lambda run, **kw: calls.append(kw))
    assert main(["serve", "RUN", "--device", "cpu"]) == 0
    assert calls[-1]["device"] == "cpu" and calls[-1]["providers"] is None
    assert main(["serve", "RUN", "--onnx", "--providers", "cpu"]) == 0
    assert calls[-1]["providers"] == "cpu" and calls[-1]["device"] == "auto"
    assert main(["serve", "RUN"]) == 0 and calls[-1]["device"] == "auto" and calls[-1]["providers"] is None
    assert main(["serve", "RUN", "--providers", "cpu"]) == 2  # ONNX Runtime's option without --onnx
    assert main(["serve", "RUN", "--onnx", "--device", "cuda"]) == 2
    assert "--providers" in capsys.readouterr().err


# ---------------------------------------------------------------------- --providers
def test_providers_default_to_cuda_first_when_available_then_cpu():
    ort = pytest.importorskip("onnxruntime")  # the export extra
    from ocula.export.runtime import resolve_providers

    want = (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in ort.get_available_providers() else []) \
        + ["CPUExecutionProvider"]
    assert resolve_providers(None) == want
    assert resolve_providers("cpu") == resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    assert resolve_providers(["cpu", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_an_unavailable_provider_is_one_line_naming_those_there_are():
    ort = pytest.importorskip("onnxruntime")
    from ocula.export.runtime import resolve_providers

    missing = next(p for p in ("NoSuchExecutionProvider", "CUDAExecutionProvider")
                   if p not in ort.get_available_providers())
    with pytest.raises(OculaError, match="not available here") as e:
        resolve_providers(f"cpu,{missing}")
    assert "CPUExecutionProvider" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OculaError, match="at least one"):
        resolve_providers(" , ")


def test_a_session_runs_on_the_providers_asked_for(tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from ocula.export.runtime import make_session

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "tiny.onnx")
    session = make_session(tmp_path / "tiny.onnx", threads=1, providers="cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]
    (y,) = session.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})
    assert y.tolist() == [[0.0, 0.0, 2.0]]


def test_benchmark_passes_providers_through(monkeypatch, capsys):
    from ocula.export import benchmark

    seen = {}

    def fake(run, backends, batches, **kw):
        seen.update(kw, backends=backends, batches=batches)
        raise OculaError("stop here")

    monkeypatch.setattr(benchmark, "benchmark", fake)
    assert main(["benchmark", "RUN", "--backends", "onnx", "--providers", "cuda,cpu"]) == 2
    assert seen["providers"] == "cuda,cpu" and seen["backends"] == ["onnx"] and seen["batches"] == [1, 32]


# ---------------------------------------------------------------------- README
def test_the_readme_table_lists_every_command():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## CLI reference"):]
    listed = set(re.findall(r"^\| `(?:ocula|torchrun [^`]*?-m ocula) (?:--\S+ … / `ocula )?([a-z]+)", table, re.M))
    listed |= set(re.findall(r"`ocula ([a-z]+)[^`]*`", table))
    missing = sorted(set(cli.SUBPARSERS) - listed)
    assert not missing, f"README's command table lacks: {', '.join(missing)}"
    assert "docs/cli.md" in table
    assert text.startswith("# ocula\n\n```\nmake demo ")
