"""No traceback, ever: a generated hostile corpus run through every command (issue 14).

Hostile data files (odd names, empty, truncated, not an image, decompression bomb, a symlink escaping
the folder) sit in one class folder among real digit PNGs, and that folder goes through train,
evaluate, predict, audit, explain, export (its accuracy gate), embed and similar; and each is uploaded
to the server. Broken checkpoints (safetensors header and layout mutations, pickles whose
`__reduce__` would create a marker file) go through every command that takes a model.

The invariant: every bad input is a counted, named skip or a one-line `ocula: error:` with a non-zero
exit; never a traceback, never a 5xx, never an executed payload.

Commands run as `ocula ARGV` in children forked from one warm process (tests/hostile.py: the same
`ocula.cli.main` as `python -m ocula`, without ~4 s of imports each); one test checks that a real
`python -m ocula` subprocess gives the same answer.
Set OCULA_CORPUS_TABLE=PATH.md to write the commands × cases table (docs/bench/reliability.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import hostile  # tests/ is on sys.path (rootdir conftest)

DATA_COMMANDS = ("train", "evaluate", "predict", "audit", "explain", "export", "embed", "similar")
DATASET_COMMANDS = ("train", "evaluate", "audit", "export", "embed", "similar")  # read DATA as a dataset
MODEL_COMMANDS = ("train", "evaluate", "predict", "explain", "export", "embed", "similar", "serve")
REPO = str(Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------- the corpus and its runs
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, digits_run):
    root = tmp_path_factory.mktemp("hostile")
    data = hostile.make_data_corpus(root / "data", root / "outside")
    from ocula.data.builtin import export_builtin

    export_builtin("digits", root / "gallery", split="test", limit=20)  # a clean gallery for `similar`
    marker = root / "PAYLOAD_EXECUTED"
    models = hostile.make_model_corpus(root / "models", os.path.join(digits_run, "weights", "best.safetensors"),
                                       str(marker))
    return {"root": root, "data": data, "gallery": str(root / "gallery"), "models": models, "marker": marker, "run": digits_run,
            "cases": hostile.case_paths(data)}


def data_argv(command: str, c: dict) -> list[str]:
    root, data, run = c["root"], str(c["data"]), c["run"]
    return {
        "train": ["train", data, "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
                  "--out", str(root / "train")],
        "evaluate": ["evaluate", run, data, "--out", str(root / "eval")],
        "predict": ["predict", run, data, "--json", str(root / "predict.json")],
        "audit": ["audit", data, "--folds", "0", "--out", str(root / "audit")],
        "explain": ["explain", run, str(c["data"] / "0"), "--out", str(root / "maps")],  # the hostile class
        "export": ["export", run, "--out", str(root / "export" / "m.onnx"), "--gate-data", data],
        "embed": ["embed", run, data, "--out", str(root / "emb.npy")],
        "similar": ["similar", run, *(c["cases"][case] for case in hostile.VALID_CONTENT), "--index", data,
                    "--k", "2", "--json", str(root / "similar.json")],
    }[command]


def outputs_of(command: str, c: dict) -> list[Path]:
    """The files a command writes that may name skipped inputs."""
    root = c["root"]
    return {"train": [root / "train" / "data.json", root / "train" / "summary.json"],
            "evaluate": [root / "eval" / "report.json"], "predict": [root / "predict.json"],
            "audit": [root / "audit" / "issues.json"], "explain": [root / "maps" / "summary.json"],
            "export": [root / "export" / "m.gate.json"], "embed": [root / "emb.json"],
            "similar": [root / "similar.json"]}[command]


@pytest.fixture(scope="module")
def data_results(corpus):
    """Each command once over the hostile folder; and `similar` with each case file as its query."""
    keys = list(DATA_COMMANDS) + [("similar query", case) for case in hostile.DATA_CASES]
    argvs = [data_argv(cmd, corpus) for cmd in DATA_COMMANDS]
    argvs += [["similar", corpus["run"], corpus["cases"][case], "--index", corpus["gallery"], "--k", "1"]
              for case in hostile.DATA_CASES]
    results = hostile.run_forked(argvs, REPO, corpus["root"] / "work-data", timeout=120)
    return dict(zip(keys, results))


def model_argv(command: str, model: str, i: int, c: dict) -> list[str]:
    root, data = c["root"], str(c["data"])
    image = c["cases"]["non-UTF-8 name"]  # a good image with a hostile name
    return {
        "train": ["train", data, "--epochs", "1", "--max-steps", "1", "--from", model, "--out", str(root / f"t{i}")],
        "evaluate": ["evaluate", model, data, "--out", str(root / f"ev{i}")],
        "predict": ["predict", model, image],
        "explain": ["explain", model, image, "--out", str(root / f"maps{i}")],
        "export": ["export", model, "--out", str(root / f"x{i}.onnx")],
        "embed": ["embed", model, data, "--out", str(root / f"e{i}.npy")],
        "similar": ["similar", model, image, "--index", c["gallery"]],
        "serve": ["serve", model, "--port", "0"],  # must refuse before it listens
    }[command]


@pytest.fixture(scope="module")
def model_results(corpus):
    keys = [(case, cmd) for case in corpus["models"] for cmd in MODEL_COMMANDS]
    argvs = [model_argv(cmd, corpus["models"][case], i, corpus) for i, (case, cmd) in enumerate(keys)]
    results = hostile.run_forked(argvs, REPO, corpus["root"] / "work-models", timeout=60)
    return dict(zip(keys, results))


# ---------------------------------------------------------------------------- reading the outcomes
def _text_of(path: Path) -> list[str]:
    """Pieces of an output file small enough to attribute to one input: JSON objects, else lines."""
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.splitlines()
    pieces = []

    def walk(node):
        if isinstance(node, dict):
            text = json.dumps(node, ensure_ascii=False)
            if len(text) < 800:
                pieces.append(text)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            pieces.append(node)

    walk(doc)
    return pieces


def skip_reason(token: str, pieces: list[str]):
    """The reason a command gave for skipping the input named by `token`, or None if it named none."""
    for piece in pieces:
        if token not in piece:
            continue
        low = piece.lower().replace(token, "")
        for words, reason in hostile.REASONS.items():
            if words in low:
                return reason
    return None


def data_outcome(command: str, case: str, result: dict, c: dict) -> str:
    if hostile.internal_error(result):
        return f"internal error ({hostile.internal_error(result)})"
    if "Traceback" in result["stderr"]:
        last = [line for line in result["stderr"].splitlines() if line.strip()][-1]
        return f"TRACEBACK ({last.split(':')[0]})"
    if result["rc"] != 0:
        return "error: " + result["stderr"].strip().splitlines()[-1][:80] if hostile.one_line_error(result) \
            else f"exit {result['rc']} without a one-line error"
    pieces = result["stdout"].splitlines() + result["stderr"].splitlines()
    for path in outputs_of(command, c):
        pieces += _text_of(path)
    reason = skip_reason(hostile.TOKENS[case], pieces)
    if reason:
        return f"skipped: {reason}"
    if case in hostile.VALID_CONTENT:
        return "used"
    # a bad file that no output names: used as it is (a followed link), or dropped silently / counted only
    return "followed" if case == "escaping symlink" and command not in DATASET_COMMANDS else "not named"


def model_outcome(result: dict) -> str:
    if hostile.internal_error(result):
        return f"internal error ({hostile.internal_error(result)})"
    if "Traceback" in result["stderr"]:
        last = [line for line in result["stderr"].splitlines() if line.strip()][-1]
        return f"TRACEBACK ({last.split(':')[0]})"
    if result["rc"] == "timeout":
        return "hang"
    if result["rc"] == 0:
        return "accepted (exit 0)"
    return "one-line error" if hostile.one_line_error(result) else f"exit {result['rc']}, no one-line error"


# ---------------------------------------------------------------------------- data files through commands
@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_data_corpus_never_a_traceback(command, data_results):
    result = data_results[command]
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    # a folder with a few bad files still works: the bad files are skipped, the rest used
    assert result["rc"] == 0, result["stderr"][-2000:]


@pytest.mark.parametrize("case", list(hostile.DATA_CASES))
@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_data_case_outcome(command, case, data_results, corpus):
    outcome = data_outcome(command, case, data_results[command], corpus)
    assert not outcome.startswith(("TRACEBACK", "exit", "internal error")), outcome
    if case in hostile.VALID_CONTENT:
        return  # a good image under an odd name: used, or at worst named and skipped
    if case == "escaping symlink" and command not in DATASET_COMMANDS:
        return  # predict/explain INPUTS: following a link the user handed over is allowed
    assert outcome.startswith("skipped:"), f"{command} did not name '{case}' as skipped ({outcome})"


@pytest.mark.parametrize("case", list(hostile.DATA_CASES))
def test_similar_hostile_query(case, data_results):
    """A query image is an input the user named: used, or refused in one line (exit 2)."""
    result = data_results[("similar query", case)]
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    if case in hostile.VALID_CONTENT or case == "escaping symlink":
        assert result["rc"] == 0, result["stderr"][-2000:]
    else:
        assert hostile.one_line_error(result), result["stderr"][-2000:]


def test_real_subprocess_agrees_with_forked_child(corpus, data_results):
    """`python -m ocula predict` for real: the same exit code, the same skips, no traceback."""
    argv = data_argv("predict", corpus)
    argv[argv.index("--json") + 1] = str(corpus["root"] / "predict-subprocess.json")
    real = hostile.run_subprocess(argv, REPO)
    forked = data_results["predict"]
    assert "Traceback" not in real["stderr"], real["stderr"][-3000:]
    assert real["rc"] == forked["rc"]
    assert real["stdout"].count("ERROR:") == forked["stdout"].count("ERROR:")


# ---------------------------------------------------------------------------- broken checkpoints
@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("case", ["zero-byte bundle", "truncated file", "truncated header", "header length too large",
                                  "invalid JSON header", "overlapping offsets", "shape vs byte length",
                                  "shape vs architecture", "bad ocula metadata", "zero-byte .pt",
                                  "pickle payload .pt", "pickle named .safetensors"])
def test_model_case_one_line_error(case, command, model_results):
    result = model_results[(case, command)]
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert result["rc"] != "timeout", f"{command} on '{case}' did not finish (serve must refuse before listening)"
    assert hostile.one_line_error(result), f"rc={result['rc']} stderr={result['stderr'][-1500:]}"


def test_pickle_payload_never_executed(corpus, model_results, data_results):
    """No command unpickled the payload (it would have created the marker file)."""
    assert model_results and not corpus["marker"].exists()


def test_pickle_payload_refused_by_readers(corpus):
    from ocula import bundle
    from ocula.errors import OculaError
    from ocula.engine.weights import read_weights

    for path in (corpus["models"]["pickle payload .pt"], corpus["models"]["pickle named .safetensors"]):
        with pytest.raises(OculaError):
            read_weights(path)
        with pytest.raises(OculaError):
            bundle.load_model(path)
    assert not corpus["marker"].exists()


# ---------------------------------------------------------------------------- hostile uploads to the server
@pytest.fixture(scope="module")
def client(digits_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ocula.inference.predictor import Classifier
    from ocula.serve import create_app

    app = create_app(Classifier.load(digits_run, device="cpu"), "digits", max_wait_ms=1)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def serve_outcomes(case: str, path: str, client) -> dict[str, tuple[int, dict]]:
    import base64

    with open(path, "rb") as f:
        data = f.read()
    name = os.fsencode(path).rsplit(b"/", 1)[1].decode("latin-1")  # raw bytes in the multipart header
    answers = {
        "multipart": client.post("/predict", files={"file": (name, data, "image/png")}),
        "raw body": client.post("/predict", content=data, headers={"content-type": "image/png"}),
        "v2 BYTES": client.post("/v2/models/digits/infer", json={"inputs": [
            {"name": "input", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}]}),
    }
    return {how: (r.status_code, r.json()) for how, r in answers.items()}


@pytest.fixture(scope="module")
def serve_results(corpus, client):
    return {case: serve_outcomes(case, path, client) for case, path in corpus["cases"].items()}


@pytest.mark.parametrize("case", list(hostile.DATA_CASES))
def test_serve_hostile_upload(case, serve_results):
    for how, (status, body) in serve_results[case].items():
        assert status < 500, (how, status, body)
        if case in hostile.VALID_CONTENT or case == "escaping symlink":  # the server got a good image's bytes
            assert status == 200, (how, status, body)
        else:
            assert 400 <= status < 500 and "\n" not in body["error"], (how, status, body)


# ---------------------------------------------------------------------------- the table
def test_write_table(corpus, data_results, model_results, serve_results, tmp_path):
    """The commands × cases table; OCULA_CORPUS_TABLE=PATH.md keeps it (docs/bench/reliability.md)."""
    target = os.environ.get("OCULA_CORPUS_TABLE") or str(tmp_path / "corpus.md")
    lines = ["| data case | " + " | ".join(DATA_COMMANDS) + " | similar (query) | serve (multipart / raw / v2) |",
             "|---|" + "---|" * (len(DATA_COMMANDS) + 2)]
    for case in hostile.DATA_CASES:
        cells = [data_outcome(cmd, case, data_results[cmd], corpus) for cmd in DATA_COMMANDS]
        cells.append(model_outcome(data_results[("similar query", case)]).replace("accepted (exit 0)", "used"))
        serve = " / ".join(str(status) for status, _ in serve_results[case].values())
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {serve} |")
    lines += ["", "| checkpoint case | " + " | ".join(MODEL_COMMANDS) + " |",
              "|---|" + "---|" * len(MODEL_COMMANDS)]
    for case in corpus["models"]:
        cells = [model_outcome(model_results[(case, cmd)]) for cmd in MODEL_COMMANDS]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", f"payload marker file created: {'YES' if corpus['marker'].exists() else 'no'}", ""]
    Path(target).write_text("\n".join(lines), encoding="utf-8")
    written = Path(target).read_text(encoding="utf-8")
    assert "TRACEBACK" not in written and "internal error" not in written and "not named" not in written
    assert written.count("\n| ") == len(hostile.DATA_CASES) + len(corpus["models"]) + 1  # + 2nd header
