"""Issue 14, "no traceback, ever": hostile model files, hostile filenames, the CLI's last resort.

Every malformed file is refused with one BadWeightsError (an OculaError) that names the file, by every
reader (bundle.read_meta / load_model, weights_file.load_tensors / load_state, transfer.read_weights), and the CLI
turns it into one line `ocula: error: …` with exit code 2.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ocula import bundle, io, weights_file
from ocula.errors import BadWeightsError, OculaError

# ----------------------------------------------------------------------------- hostile files


def _split(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:], n


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def malformed_safetensors(good: bytes) -> dict[str, bytes]:
    """The six ways a .safetensors file is broken at the format level."""
    header, body, n = _split(good)
    names = [k for k in header if k != "__metadata__"]
    out = {"truncated-file": good[: 8 + n + len(body) // 2],
           "truncated-header": good[: 8 + n // 2],
           "header-too-large": struct.pack("<Q", 1 << 40) + good[8:],
           "invalid-json-header": good[:8] + b"{" + b"x" * (n - 2) + b"}" + body}
    h = json.loads(json.dumps(header))
    h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
    out["overlapping-offsets"] = _join(h, body)
    h = json.loads(json.dumps(header))
    big = max(names, key=lambda k: h[k]["data_offsets"][1] - h[k]["data_offsets"][0])
    h[big]["shape"] = [s * 2 for s in h[big]["shape"]] or [2]
    out["shape-mismatch"] = _join(h, body)
    return out


def malformed_bundles(good: bytes) -> dict[str, bytes]:
    """Valid safetensors whose ocula metadata (or tensors) cannot make the model it describes."""
    header, body, _ = _split(good)
    meta = json.loads(header["__metadata__"]["ocula"])

    def with_meta(raw):
        h = json.loads(json.dumps(header))
        h["__metadata__"]["ocula"] = raw
        return _join(h, body)

    def changed(fn):
        m = json.loads(json.dumps(meta))
        fn(m)
        return with_meta(json.dumps(m))

    out = {"meta-not-json": with_meta("{not json"), "meta-nested": with_meta('{"arch": ' + "[" * 5000)}
    for key in ("arch", "contract", "classes"):
        out[f"meta-no-{key}"] = changed(lambda m, key=key: m.pop(key))
    out["meta-unknown-model"] = changed(lambda m: m["arch"].update(name="no_such_net"))
    out["meta-class-count"] = changed(lambda m: m["arch"].update(num_classes=m["arch"]["num_classes"] + 3))
    out["tensors-dont-fit"] = changed(lambda m: m["arch"].update(in_chans=3))
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    out["no-metadata"] = _join(h, body)
    return out


FORMAT_CASES = ["truncated-file", "truncated-header", "header-too-large", "invalid-json-header",
                "overlapping-offsets", "shape-mismatch"]
BUNDLE_CASES = ["meta-not-json", "meta-nested", "meta-no-arch", "meta-no-contract", "meta-no-classes", "meta-unknown-model",
                "meta-class-count", "tensors-dont-fit", "no-metadata"]


@pytest.fixture(scope="module")
def hostile(digits_run, tmp_path_factory) -> dict[str, Path]:
    good = (Path(digits_run) / "weights" / "best.safetensors").read_bytes()
    root = tmp_path_factory.mktemp("hostile")
    files = {}
    for name, data in {**malformed_safetensors(good), **malformed_bundles(good)}.items():
        files[name] = root / f"{name}.safetensors"
        files[name].write_bytes(data)
    return files


def _one_line(e: Exception, path) -> str:
    text = str(e)
    assert "\n" not in text, text
    assert str(path) in text, text
    return text


# ----------------------------------------------------------------------------- the one reader


@pytest.mark.parametrize("case", FORMAT_CASES)
def test_every_reader_refuses_a_malformed_safetensors(hostile, case):
    path = hostile[case]
    readers = [bundle.read_meta, bundle.load_model, weights_file.load_tensors, weights_file.load_state]
    from ocula.engine.weights import read_weights

    readers.append(read_weights)
    for reader in readers:
        with pytest.raises(BadWeightsError) as e:
            reader(path)
        assert "not a readable safetensors file" in _one_line(e.value, path), reader
        assert e.value.path == str(path)


@pytest.mark.parametrize("case", BUNDLE_CASES)
def test_load_model_refuses_a_bundle_that_cannot_build_its_model(hostile, case):
    path = hostile[case]
    with pytest.raises(BadWeightsError) as e:
        bundle.load_model(path)
    text = _one_line(e.value, path)
    expect = {"meta-not-json": "not valid JSON", "meta-nested": "not valid JSON", "meta-no-arch": "lacks 'arch'", "meta-no-contract":
              "lacks 'contract'", "meta-no-classes": "lacks 'classes'", "meta-unknown-model": "no_such_net",
              "meta-class-count": "13 outputs", "tensors-dont-fit": "features.0.weight",
              "no-metadata": "without ocula metadata"}[case]
    assert expect in text


def test_pretrained_reads_ocula_bundles_through_the_same_checks(hostile, digits_run):
    from ocula.engine.weights import read_weights

    with pytest.raises(BadWeightsError, match="not valid JSON"):
        read_weights(hostile["meta-not-json"])
    plain = read_weights(hostile["no-metadata"])  # any safetensors of tensors is fine for --pretrained
    assert plain.meta is None and plain.state_dict
    assert read_weights(digits_run).is_ocula


def test_training_state_that_is_not_a_state_is_refused(digits_run, tmp_path):
    with pytest.raises(BadWeightsError, match="not an ocula training state"):
        weights_file.load_state(Path(digits_run) / "weights" / "best.safetensors")
    state = weights_file.load_state(Path(digits_run) / "state" / "last.safetensors")
    assert state["epoch"] == 4
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(BadWeightsError, match="empty file"):
        weights_file.load_state(empty)
    with pytest.raises(BadWeightsError, match="no such file"):
        weights_file.load_tensors(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- torch checkpoints


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_torch_checkpoints_that_are_empty_corrupt_or_hostile(tmp_path):
    import pickle

    from ocula.engine.weights import read_weights

    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(3)}, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    cases = {"empty.pt": (b"", "empty file"),
             "truncated.pt": (good[: len(good) // 2], "not a readable PyTorch checkpoint"),
             "random.pt": (os.urandom(4096), "not a readable PyTorch checkpoint"),
             "text.pt": (b"hello world\n", "not a readable PyTorch checkpoint"),
             "onebyte.pt": (b"\x80", "not a readable PyTorch checkpoint"),
             "evil-raw.pt": (pickle.dumps(_Evil(marker), protocol=2), "refused to load: it would import"),
             "evil-raw4.pt": (pickle.dumps(_Evil(marker), protocol=4), "")}
    torch.save({"w": _Evil(marker)}, tmp_path / "evil-zip.pt")
    cases["evil-zip.pt"] = ((tmp_path / "evil-zip.pt").read_bytes(), "would import 'posix.system'")
    for name, (data, expect) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadWeightsError) as e:
            read_weights(tmp_path / name)
        assert expect in _one_line(e.value, tmp_path / name), name
    assert not marker.exists(), "a pickle payload ran"
    assert read_weights(tmp_path / "good.pt").state_dict["w"].shape == (3,)


# ----------------------------------------------------------------------------- the CLI


def _cli(*args, env=None, timeout=120):
    env = {**os.environ, "OCULA_OFFLINE": "1", **(env or {})}
    env.pop("OCULA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ocula", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _assert_one_line_error(r, *needles, code=2):
    err = [line for line in r.stderr.splitlines() if line.strip() and "%|" not in line]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("ocula: error: "), r.stderr[-2000:]
    for n in needles:
        assert str(n) in err[0], err[0]
    return err[0]


class _Result:
    def __init__(self, code, err):
        self.returncode, self.stderr = code, err


def _in_process(capsys, *args):
    """cli.main in this process (no interpreter start-up): same code path as `ocula ...`."""
    from ocula import cli

    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    return _Result(code, capsys.readouterr().err)


def test_cli_commands_refuse_malformed_models_in_one_line(hostile, digits_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("OCULA_DEBUG", raising=False)
    img = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(img)
    # end to end once, in a fresh interpreter
    _assert_one_line_error(_cli("predict", hostile["truncated-file"], img), hostile["truncated-file"],
                           "truncated")
    _assert_one_line_error(_in_process(capsys, "evaluate", hostile["overlapping-offsets"], "digits", "--out",
                                       tmp_path / "ev"), hostile["overlapping-offsets"])
    _assert_one_line_error(_in_process(capsys, "export", hostile["tensors-dont-fit"], "--out",
                                       tmp_path / "m.onnx"), hostile["tensors-dont-fit"], "do not fit")
    assert not (tmp_path / "m.onnx").exists()
    _assert_one_line_error(_in_process(capsys, "explain", hostile["meta-no-classes"], img, "--out",
                                       tmp_path / "ex"), hostile["meta-no-classes"], "lacks 'classes'")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _assert_one_line_error(_in_process(capsys, "train", "digits", "--model", "seed_cnn", "--pretrained", empty,
                                       "--epochs", "1", "--out", tmp_path / "pre"), empty, "empty file")
    # --resume with a damaged training state: refused, naming the state file
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    state = run / "state" / "last.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    _assert_one_line_error(_in_process(capsys, "train", "--resume", run), state)


def test_cli_last_resort_guard_writes_a_crash_log(monkeypatch, tmp_path, capsys):
    from ocula import cli

    def boom(args):
        raise ValueError("a bug\nspanning lines")

    cli.build_parser()
    monkeypatch.setitem(cli.COMMANDS, "models", boom)
    monkeypatch.setenv("OCULA_CRASH_DIR", str(tmp_path))
    monkeypatch.delenv("OCULA_DEBUG", raising=False)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ocula: error: internal error: ValueError: a bug (details in ")
    log = Path(err.rsplit("details in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "spanning lines" in log.read_text()
    monkeypatch.setenv("OCULA_DEBUG", "1")  # tests and developers still see real bugs
    with pytest.raises(ValueError):
        cli.main(["models"])


def test_cli_turns_disk_errors_into_one_line(monkeypatch, capsys):
    import errno

    from ocula import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/report.json")

    cli.build_parser()
    monkeypatch.setitem(cli.COMMANDS, "models", full)
    monkeypatch.delenv("OCULA_DEBUG", raising=False)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "ocula: error: /data/out/report.json: No space left on device\n"


def test_no_image_reader_outside_open_image():
    """Pillow opens files only in data/images.open_image (audit's header peek works on bytes it read)."""
    src = Path(__file__).parents[1] / "src" / "ocula"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if "Image.open(" in p.read_text())
    # data/native.py peeks at headers for the data's statistics, guarded like audit's
    assert [u for u in users if not u.startswith("data/")] == ["audit/integrity.py"], users


def test_no_safetensors_reader_outside_weights_file():
    src = Path(__file__).parents[1] / "src" / "ocula"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                   if "safe_open(" in p.read_text() or "load_file(" in p.read_text())
    assert users == ["weights_file.py"], users


# ----------------------------------------------------------------------------- filenames as bytes


LATIN1 = os.fsdecode(b"caf\xe9.png")


def test_display_name():
    from ocula.names import display_name

    assert display_name(LATIN1) == "caf\\xe9.png"
    assert display_name("café.png") == "café.png"
    assert display_name(b"x\xff") == "x\\xff"
    assert display_name("a\nb.png", line=True) == "a\\nb.png"
    assert display_name(Path("/tmp") / LATIN1) == "/tmp/caf\\xe9.png"


def test_writers_never_crash_on_undecodable_names(tmp_path):
    obj = {"paths": [LATIN1, "new\nline.png", "L" * 251 + ".png"], LATIN1: 1}
    io.write_json(tmp_path / "a.json", obj)
    back = io.read_json(tmp_path / "a.json")
    assert back["paths"][0] == "caf\\xe9.png" and back["paths"][1] == "new\nline.png"
    assert back["caf\\xe9.png"] == 1
    io.write_text(tmp_path / "a.txt", f"{LATIN1}\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "caf\\xe9.png\n"
    io.write_json(tmp_path / "r.json", {"skipped": [[LATIN1, "bad"]]})
    assert "caf\\\\xe9.png" in (tmp_path / "r.json").read_text()


def test_cli_predict_and_audit_on_a_latin1_folder(digits_run, tmp_path):
    import csv

    from PIL import Image

    folder = tmp_path / "data"
    names = ["0/" + LATIN1, "0/plain.png", "1/new\nline.png", "1/" + "L" * 251 + ".png", '1/a,"q".png',
             "1/b.png"]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), i * 40).save(folder / name, format="PNG")
    env = {"PYTHONIOENCODING": "utf-8"}  # a strict UTF-8 stdout: the case that used to crash
    r = _cli("predict", digits_run, folder, "--csv", tmp_path / "p.csv", "--json", tmp_path / "p.json", env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "caf\\xe9.png" in r.stdout and "new\\nline.png" in r.stdout
    assert len(r.stdout.splitlines()) == len(names)  # one line each, the newline escaped
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8", newline="")))
    assert len(rows) == len(names) and any(row["source"].endswith("new\nline.png") for row in rows)
    assert any(row["source"].endswith("caf\\xe9.png") for row in rows)
    assert any(p["source"].endswith("caf\\xe9.png") for p in json.loads((tmp_path / "p.json").read_text()))
    from ocula import cli  # audit in this process (no second interpreter start-up)

    assert cli.main(["audit", str(folder), "--out", str(tmp_path / "audit"), "--folds", "2", "--epochs", "1"]) == 0
    for f in ("issues.json", "report.md", "report.html"):
        assert (tmp_path / "audit" / f).read_text(encoding="utf-8")  # valid UTF-8


def test_embeddings_keep_exact_names_and_the_index_cache_hashes_them(digits_run, tmp_path):
    import numpy as np

    from ocula.transfer.embed import Embeddings
    from ocula.transfer.retrieval import _cache_path

    emb = Embeddings(np.zeros((2, 4), np.float32), [str(tmp_path / LATIN1), "b.png"], ["0", "1"], [], "m")
    emb.save(tmp_path / "e.npy")
    assert Embeddings.load(tmp_path / "e.npy").paths[0] == str(tmp_path / LATIN1)  # reopenable
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / LATIN1).write_bytes(b"x")
    assert _cache_path(digits_run, tmp_path / "g").suffix == ".npy"
