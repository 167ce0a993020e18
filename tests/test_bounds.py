"""What the declared version bounds promise: the lower bounds `make test-min` installs, code that runs on them
(numpy 1.x, the ONNX opset pinned), a core install without scipy, and the EXIF rule for in-memory images."""
from __future__ import annotations

import ast
import io
import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(reqs) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in reqs}


# ------------------------------------------------------------------------------ pyproject and make test-min
def test_min_constraints_pin_every_floor_and_admit_the_installed_torch():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "min_constraints.py"), str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, check=True).stdout
    pins = dict(line.split(";")[0].split("==") for line in out.splitlines() if line and not line.startswith("#"))
    project = _project()
    declared = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    floors = {re.split(r"[\s\[>]", r, maxsplit=1)[0].lower().replace("_", "-"): r.split(">=")[1].split(";")[0].strip()
              for r in declared if ">=" in r and not r.startswith("ocula[")}
    assert pins == floors
    assert "atheris==2.3; platform_system == 'Linux'" in out  # the marker travels with the pin
    # the floors are no newer than what this suite runs on (the newest-versions venv)
    installed = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    assert tuple(int(p) for p in pins["torch"].split(".")[:2]) <= installed


def test_extras_core_without_scipy_serve_declares_its_imports_all_without_test_tools():
    project = _project()
    extras = project["optional-dependencies"]
    assert "scipy" not in _names(project["dependencies"])
    assert {"pydantic", "starlette", "fastapi"} <= _names(extras["serve"])
    (all_spec,) = extras["all"]
    members = set(all_spec.split("[", 1)[1].rstrip("]").split(","))
    assert members == set(extras) - {"all", "test"}  # every feature extra, no test tools
    features = set().union(*(_names(extras[m]) for m in members))
    assert not {"pytest", "hypothesis", "schemathesis", "selenium", "tritonclient", "atheris"} & features


def test_make_test_fast_selects_by_registered_markers():
    make = (ROOT / "Makefile").read_text()
    fast = make.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    used = set(re.findall(r"not (\w+)", fast.split("-m", 1)[1]))
    registered = {m.split(":")[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())
                  ["tool"]["pytest"]["ini_options"]["markers"]}
    assert used == {"slow", "dist"} and used <= registered  # an unknown marker would silently select everything
    assert '".[all,test]"' in make and "min_constraints.py" in make
    assert (ROOT / ".ci" / "run-min").read_text().strip().endswith("make test-min")


def test_core_modules_never_import_scipy():
    """scipy is not a core dependency: only modules of an extra may import it (the photo-objects generator)."""
    allowed = {"data/synth_detection.py", "data/synth_clips.py"}  # `data` extra; imported by `ocula datasets make` only
    users = set()
    for path in (ROOT / "src" / "ocula").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m == "scipy" or m.startswith("scipy.") for m in mods):
                users.add(path.relative_to(ROOT / "src" / "ocula").as_posix())
    assert users <= allowed, f"scipy imported by {sorted(users - allowed)} (a core install has no scipy)"


# ------------------------------------------------------------------------------ the temperature minimiser
def test_golden_section_finds_scipys_temperature():
    from scipy.optimize import minimize_scalar

    from ocula.evaluation.calibration import LOG_T_BOUNDS, _nll, fit_temperature
    from ocula.evaluation.scalar_min import minimise_bounded

    for seed, scale in enumerate((0.3, 1.0, 3.0, 8.0)):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 5, (400,), generator=g)
        z = (torch.randn(400, 5, generator=g, dtype=torch.float64) + 2.5 * torch.nn.functional.one_hot(y, 5)) * scale
        f = lambda v: float(_nll(z, y, v))  # noqa: E731
        ours = minimise_bounded(f, *LOG_T_BOUNDS)
        ref = minimize_scalar(f, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7}).x
        assert abs(math.exp(ours) - math.exp(ref)) < 1e-4, scale
    # the known-temperature case the calibration tests use: logits from T = 2.5 are fitted back
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (2000,), generator=g)
    true = torch.randn(2000, 4, generator=g, dtype=torch.float64) * 3
    y = torch.distributions.Categorical(logits=true).sample()
    report = fit_temperature((true * 2.5).numpy(), y.numpy())
    assert report["fitted"] and abs(report["temperature"] - 2.5) < 0.2


def test_golden_section_returns_the_bound_a_function_falls_towards():
    from ocula.evaluation.scalar_min import minimise_bounded

    calls = []
    assert minimise_bounded(lambda v: calls.append(v) or -v, -1.0, 2.0) == 2.0
    assert len(calls) < 50  # ~38 evaluations for a bracket of 3 to 1e-7
    assert minimise_bounded(lambda v: v, -1.0, 2.0) == -1.0
    assert abs(minimise_bounded(lambda v: (v - 0.3) ** 2, -1.0, 2.0) - 0.3) < 1e-6
    with pytest.raises(ValueError):
        minimise_bounded(lambda v: v, 1.0, 1.0)


# ------------------------------------------------------------------------------ numpy 1.x
def test_verification_auc_needs_no_numpy2_function(monkeypatch):
    from sklearn.metrics import roc_auc_score

    from ocula.transfer.verify import verification_metrics

    rng = np.random.default_rng(0)
    same = rng.random(500) < 0.3
    scores = np.round(rng.normal(same * 1.2, 1.0), 1)  # rounded: ties, which ROC must step over together
    want = roc_auc_score(same, scores)  # before the patch: sklearn itself may call np.trapz
    for name in ("trapezoid", "trapz"):  # neither exists on every numpy the bounds admit
        monkeypatch.delattr(np, name, raising=False)
    assert verification_metrics(scores, same)["auc"] == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------------------ ONNX: the opset pinned
def _tiny_bundle():
    from ocula import bundle
    from ocula.data.contract import DataContract
    from ocula.models import create_model

    torch.manual_seed(0)
    model = create_model("seed_cnn", 3, 1, 16).eval()
    return model, bundle.make_meta(model.ocula_arch, DataContract(16, 1, (0.5,), (0.5,)), ["a", "b", "c"])


def test_onnx_export_pins_the_opset_and_runs_on_the_supported_exporter(tmp_path):
    pytest.importorskip("onnxruntime")
    from ocula.export import onnx as ox
    from ocula.export.runtime import OnnxClassifier

    model, meta = _tiny_bundle()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = ox.export_onnx(model, meta, tmp_path / "m.onnx")
    assert not [w for w in caught if "falling back" in str(w.message)]  # the first route worked
    props = {p.key: p.value for p in ox.load_proto(path).metadata_props}
    export = json.loads(props["ocula"])["export"]  # where a reader that knows nothing of torch finds it
    assert export["opset"] == ox.OPSET == 18 and ox._opset_of(ox.load_proto(path)) == 18
    assert export["exporter"] == "dynamo"
    x = torch.randn(3, 1, 16, 16)  # the example batch was 2: the batch axis stays dynamic on both routes
    with torch.no_grad():
        want = model(x)
    assert (OnnxClassifier.load(path, threads=1).logits(x) - want).abs().max() < 1e-4


# ------------------------------------------------------------------------------ EXIF for in-memory images
def _phone_photo(orientation: int = 6) -> bytes:
    """A 40×20 JPEG stored sideways: white left half, black right half, EXIF orientation 6 (turn 90° cw)."""
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    img, exif = Image.fromarray(arr), Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_a_pil_image_passed_in_is_turned_upright_like_the_file():
    from PIL import Image

    from ocula.data.images import open_image, shown_size, to_pil

    data = _phone_photo()
    from_file = open_image(data)
    opened = Image.open(io.BytesIO(data))  # what a caller does before api.predict([img])
    assert opened.size == (40, 20) and shown_size(opened) == (20, 40)
    upright = to_pil(opened)
    assert upright.size == from_file.size == (20, 40)
    assert np.array_equal(np.asarray(upright), np.asarray(from_file))
    top, bottom = np.asarray(upright)[:15].mean(), np.asarray(upright)[25:].mean()
    assert top > 200 > 50 > bottom  # orientation 6: the stored left (white) half is now on top
    # an image built in memory with the tag set, and one without a tag, which is handed back as it is
    built = Image.fromarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    built.getexif()[0x0112] = 6
    assert to_pil(built).size == (20, 40)
    plain = Image.new("RGB", (40, 20))
    assert to_pil(plain) is plain and shown_size(plain) == (40, 20)


def test_predictor_preprocesses_a_pil_image_as_its_file():
    from PIL import Image

    from ocula.data.contract import DataContract
    from ocula.modality.image import ImageModality

    data, contract = _phone_photo(), DataContract(16, 3, crop_pct=1.0)
    modality = ImageModality()
    from_pil = modality.preprocess(Image.open(io.BytesIO(data)), contract)
    assert torch.equal(from_pil, modality.preprocess(data, contract))
    assert from_pil.shape == (3, 16, 16)

