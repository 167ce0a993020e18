"""ONNX export, the accuracy gate, int8 and the benchmark, on the tiny digits run (real data)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ocula.cli import main
from ocula.errors import OculaError


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """A copy of the digits run, exported by the CLI with fp32 and int8 files → (run dir, rc, stdout)."""
    run = tmp_path_factory.mktemp("export") / "digits"
    shutil.copytree(digits_run, run)
    capture = pytest.MonkeyPatch()
    import io
    import sys
    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        rc = main(["export", str(run), "--format", "onnx", "--int8", "--calib-size", "128"])
    finally:
        capture.undo()
    return run, rc, out.getvalue()


def test_onnx_logits_match_pytorch_at_any_batch(exported):
    from ocula.export import OnnxClassifier
    from ocula.inference.predictor import Classifier

    run, _, _ = exported
    onnx_clf, torch_clf = OnnxClassifier.load(run / "model.onnx", threads=1), Classifier.load(run, device="cpu")
    c, s = torch_clf.contract.channels, torch_clf.contract.input_size
    for batch in (1, 5):  # the example batch was 2: the batch axis really is dynamic
        x = torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(batch))
        got, want = onnx_clf.logits(x), torch_clf.logits(x)
        assert got.shape == (batch, len(torch_clf.classes)) and got.dtype == torch.float32
        assert (got - want).abs().max() < 1e-4


def test_metadata_alone_is_enough_to_predict(exported):
    import onnx

    import ocula
    from ocula.export import OnnxClassifier, read_onnx_meta
    from ocula.inference.predictor import Classifier

    run, _, _ = exported
    lone = run.parent / "lone.onnx"  # no run directory beside it
    shutil.copy(run / "model.onnx", lone)
    meta, ref = read_onnx_meta(lone), Classifier.load(run, device="cpu")
    from ocula.data.contract import DataContract

    assert meta["classes"] == ref.classes and DataContract.from_dict(meta["contract"]) == ref.contract
    assert meta["arch"] == ref.meta["arch"] and meta["export"]["precision"] == "fp32"
    props = {p.key: p.value for p in onnx.load(str(lone)).metadata_props}
    assert json.loads(props["ocula.classes"]) == ref.classes and props["ocula.arch"] == "seed_cnn"
    assert props["ocula.version"] == ocula.__version__ and json.loads(props["ocula.contract"])["channels"] == 1

    clf = OnnxClassifier.load(lone)
    assert clf.classes == ref.classes and clf.contract == ref.contract
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 20), dtype=np.uint8) for _ in range(7)]
    images.append(b"not an image")
    got, want = clf.predict(images, topk=3, batch_size=3), ref.predict(images, topk=3, batch_size=3)
    assert [p.label for p in got] == [p.label for p in want]
    assert got[-1].error and got[-1].error == want[-1].error
    assert all(abs(a.prob - b.prob) < 1e-4 for a, b in zip(got[:-1], want[:-1]))


def test_predict_files_and_run_dir_loading(exported, tmp_path):
    from PIL import Image

    from ocula.export import OnnxClassifier
    from ocula.inference.predictor import Classifier

    run, _, _ = exported
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    paths.append(str(tmp_path / "bad.png"))
    clf = OnnxClassifier.load(run)  # a run directory → its model.onnx
    got = sorted((p.source, p.label, p.error is not None) for p in clf.predict_files(paths, workers=0))
    want = sorted((p.source, p.label, p.error is not None)
                  for p in Classifier.load(run, device="cpu").predict_files(paths, workers=0))
    assert got == want and sum(e for *_, e in got) == 1
    assert OnnxClassifier.load(run, int8=True).precision == "int8"


def test_cli_export_writes_files_and_gate_reports(exported):
    run, rc, out = exported
    fp32 = json.loads((run / "model.gate.json").read_text())
    int8 = json.loads((run / "model.int8.gate.json").read_text())
    assert fp32["passed"] and fp32["top1_agreement"] == 1.0 and fp32["max_abs_logit_diff"] < 1e-4
    assert fp32["split"] == "test" and fp32["images"] > 300 and fp32["max_drop_points"] == 0.5
    assert int8["max_drop_points"] == 1.0 and int8["top1_agreement"] > 0.8
    assert int8["size_bytes"] < fp32["size_bytes"] / 2
    assert int8["export"]["quantization"]["calibration_images"] == 128
    assert rc == (0 if int8["passed"] else 3)
    assert "accuracy gate [fp32]" in out and "accuracy gate [int8]" in out and "top-1 agreement" in out


def test_gate_failure_exits_nonzero_with_one_line(exported, tmp_path, capsys):
    run, _, _ = exported
    target = tmp_path / "strict.onnx"
    rc = main(["export", str(run), "--out", str(target), "--max-drop", "-1", "--gate-limit", "50"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "%|" not in ln]  # no bars
    assert rc == 3 and len(err) == 1 and err[0].startswith("ocula: error: fp32: accuracy gate failed")
    report = json.loads((tmp_path / "strict.gate.json").read_text())
    assert not report["passed"] and report["images"] == 50


def test_benchmark_json_and_table(exported, tmp_path, capsys):
    run, _, _ = exported
    path = tmp_path / "bench.json"
    rc = main(["benchmark", str(run), "--backends", "eager,onnx", "--batch", "1,4", "--repeats", "3",
               "--warmup", "1", "--threads", "1", "--json", str(path)])
    assert rc == 0
    report = json.loads(path.read_text())
    cells = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert set(cells) == {("eager", 1), ("eager", 4), ("onnx", 1), ("onnx", 4)}
    for r in cells.values():
        assert r["repeats"] == 3 and set(r["latency_ms"]) >= {"p50", "p95", "p99"}
        assert r["throughput_img_s"]["median"] > 0
    assert report["params"] > 0 and report["flops_per_image"] > 0 and report["threads"] == 1
    assert "onnx" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(exported, tmp_path, capsys):
    from ocula.export import OnnxClassifier

    run, _, _ = exported
    with pytest.raises(OculaError, match="ocula export"):
        OnnxClassifier.load(tmp_path)  # a directory without model.onnx
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(OculaError, match="onnxruntime cannot load"):
        OnnxClassifier.load(tmp_path / "junk.onnx")
    assert main(["benchmark", str(run), "--backends", "eagr"]) == 2
    assert "did you mean: eager" in capsys.readouterr().err
    assert main(["export", str(run), "--calibrate", "digits"]) == 2  # --calibrate without --int8


def test_int8_scheme_auto_is_dynamic_for_a_vit_and_static_for_a_cnn(exported, tmp_path):
    import ocula
    from ocula.export import export_model
    from ocula.export.quantize import choose_scheme

    run, _, _ = exported
    assert choose_scheme(run / "model.onnx") == "static"
    info = json.loads((run / "model.int8.gate.json").read_text())["export"]["quantization"]
    assert info["method"].startswith("static") and info["scheme_requested"] == "auto"
    vit = tmp_path / "vit"
    ocula.train("digits", model="vit_nano_scratch", img_size=8, model_kwargs={"patch_size": 2}, epochs=2,
                hflip=False, out=str(vit), seed=0)
    result = export_model(str(vit), int8=True, gate_limit=100)
    assert choose_scheme(result.files["fp32"]) == "dynamic"
    gate = result.gates["int8"]
    assert gate["export"]["quantization"]["method"].startswith("dynamic")
    assert "calibration_images" not in gate["export"]["quantization"]
    assert gate["images"] == 100 and gate["top1_agreement"] > 0.8
    with pytest.raises(OculaError, match="scheme"):
        export_model(str(vit), int8=True, int8_scheme="fastest")
