"""Embeddings, retrieval, verification and margin losses, on the digits run and generated data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ocula.errors import OculaError


@pytest.fixture(scope="module")
def digits_embeddings(digits_run, tmp_path_factory):
    from ocula.transfer.embed import embed_dataset

    out = tmp_path_factory.mktemp("emb") / "digits.npy"
    return embed_dataset(digits_run, "digits", out=str(out), split="test"), out


@pytest.fixture(scope="module")
def digits_gallery(tmp_path_factory) -> Path:
    from ocula.data.builtin import export_builtin

    root = tmp_path_factory.mktemp("gallery") / "digits"
    export_builtin("digits", root, split="test", limit=60)
    return root


def test_embed_writes_unit_vectors_with_paths_and_labels(digits_embeddings, digits_run):
    from ocula.transfer.embed import Embeddings

    emb, out = digits_embeddings
    assert emb.vectors.shape == (359, 512) and emb.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["count"] == 359 and side["labels"][:3] == emb.labels[:3] and side["paths"][0].startswith("digits/")
    again = Embeddings.load(out)
    assert np.array_equal(again.vectors, emb.vectors) and again.labels == emb.labels


def test_parquet_roundtrip(digits_embeddings, tmp_path):
    pytest.importorskip("pyarrow")
    from ocula.transfer.embed import Embeddings

    emb, _ = digits_embeddings
    emb.save(tmp_path / "e.parquet")
    back = Embeddings.load(tmp_path / "e.parquet")
    assert np.array_equal(back.vectors, emb.vectors) and back.paths == emb.paths and back.splits == emb.splits


def test_retrieval_precision_at_5_on_digits(digits_embeddings):
    from ocula.transfer.retrieval import EmbeddingIndex, precision_at_k

    emb, _ = digits_embeddings
    p5 = precision_at_k(emb, k=5)
    sims = emb.vectors @ emb.vectors.T
    np.fill_diagonal(sims, -np.inf)
    labels = np.array(emb.labels)
    brute = (labels[np.argsort(-sims, axis=1)[:, :5]] == labels[:, None]).mean()
    assert p5 == pytest.approx(brute) and p5 > 0.7  # a 4-epoch fixture; the bench trains to >= 0.9
    scores, idx = EmbeddingIndex(emb).search(emb.vectors[:4], k=3, exclude_self=True)
    assert not (idx == np.arange(4)[:, None]).any() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_faiss_backend_agrees_with_exact_search(digits_embeddings):
    pytest.importorskip("faiss")
    from ocula.transfer.retrieval import EmbeddingIndex

    emb, _ = digits_embeddings
    _, exact = EmbeddingIndex(emb, backend="torch").search(emb.vectors[:50], k=1)
    _, approx = EmbeddingIndex(emb, backend="faiss").search(emb.vectors[:50], k=1)
    assert (exact == approx).mean() >= 0.98


def test_similar_cli_finds_the_query_itself_first_and_caches_the_gallery(digits_run, digits_gallery, capsys):
    from ocula.cli import main

    query = sorted(digits_gallery.rglob("*.png"))[7]
    cached = lambda: set((Path(digits_run) / "index").glob("*.npy"))  # other tests index other galleries here
    before = cached()
    argv = ["similar", digits_run, str(query), "--index", str(digits_gallery), "--k", "3", "--json", "-"]
    assert main(argv) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert hits[0]["path"] == str(query) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["label"] == query.parent.name
    after = cached()
    assert len(after - before) <= 1 and len(after) >= 1  # one gallery, one cache file (or an earlier one reused)
    assert main(argv) == 0 and cached() == after  # the second search reads the cache


def test_embed_cli_and_bad_output_suffix(digits_run, digits_gallery, tmp_path, capsys):
    from ocula.cli import main

    assert main(["embed", digits_run, str(digits_gallery), "--out", str(tmp_path / "g.npy")]) == 0
    assert "60 embeddings of dimension 512" in capsys.readouterr().out
    assert main(["embed", digits_run, str(digits_gallery), "--out", str(tmp_path / "g.txt")]) == 2
    assert "npy or .parquet" in capsys.readouterr().err


# ------------------------------------------------------------------------------ verification
def test_roc_metrics_on_known_scores():
    from ocula.transfer.verify import verification_metrics

    perfect = verification_metrics(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0], bool))
    assert perfect["eer"] == 0 and perfect["tar_at_far"]["0.01"]["tar"] == 1 and perfect["auc"] == 1
    # one of four same-pairs scores below one of four different-pairs: FAR = FRR = 0.25 there
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.5, 0.2, 0.1, 0.0])
    m = verification_metrics(s, np.array([1, 1, 1, 1, 0, 0, 0, 0], bool))
    assert m["eer"] == pytest.approx(0.25) and m["tar_at_far"]["0.01"]["tar"] == pytest.approx(0.75)
    with pytest.raises(OculaError, match="same and of different"):
        verification_metrics(np.array([0.5, 0.4]), np.array([1, 1], bool))


def test_calibrate_then_verify_pairs(digits_run, digits_gallery, capsys):
    from ocula.cli import main

    assert main(["verify", digits_run, "a.png", "b.png"]) == 2
    assert "--calibrate" in capsys.readouterr().err
    assert main(["verify", digits_run, "--calibrate", "digits", "--split", "test"]) == 0
    stored = json.loads((Path(digits_run) / "verify.json").read_text())
    assert stored["eer"] < 0.2 and (Path(digits_run) / "roc.csv").is_file()
    capsys.readouterr()
    zeros, ones = sorted((digits_gallery / "0").glob("*.png")), sorted((digits_gallery / "1").glob("*.png"))
    assert main(["verify", digits_run, str(zeros[0]), str(zeros[0])]) == 0
    assert capsys.readouterr().out.startswith("same")
    from ocula.transfer.verify import verify_pair

    r = verify_pair(digits_run, zeros[1], ones[1])
    assert r["score"] < verify_pair(digits_run, zeros[1], zeros[2])["score"]


def test_gallery_open_set_identification():
    from ocula.transfer.verify import Gallery, open_set_metrics

    rng = np.random.default_rng(0)
    centres = np.eye(3, 8)
    vectors = np.repeat(centres, 5, 0) + 0.05 * rng.standard_normal((15, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.repeat(["ann", "bob", "cy"], 5)
    gallery = Gallery().enroll(vectors[:10], ids[:10])  # cy is never enrolled
    names, _ = gallery.identify(vectors, threshold=0.8)
    assert names[:10] == list(ids[:10]) and names[10:] == [None] * 5
    m = open_set_metrics(gallery, vectors, ids, 0.8)
    assert m["dir"] == 1.0 and m["far_unknown"] == 0.0


# ------------------------------------------------------------------------------ margin losses
def test_margin_losses():
    from ocula.tasks.margin import MarginTask, add_margin

    cos = torch.tensor([[0.6, 0.2, -0.1]])
    y = torch.tensor([0])
    assert add_margin(cos, y, "cosface", 0.35)[0, 0] == pytest.approx(0.25)
    assert add_margin(cos, y, "arcface", 0.5)[0, 0] == pytest.approx(np.cos(np.arccos(0.6) + 0.5), abs=1e-6)
    plain = torch.nn.functional.cross_entropy(30 * cos, y)
    assert MarginTask("arcface", margin=0.0).loss(30 * cos, y) == pytest.approx(float(plain), rel=1e-5)
    assert MarginTask("arcface").loss(30 * cos, y) > plain
    with pytest.raises(OculaError, match="hard labels"):
        MarginTask("cosface").loss(30 * cos, torch.tensor([[1.0, 0, 0]]))


def test_arcface_training_through_the_trainer_saves_a_loadable_bundle(tmp_path):
    import ocula
    from ocula.engine.callbacks import Checkpointer
    from ocula.transfer.embed import Embedder

    run = ocula.train("digits", model="seed_cnn", margin="arcface", epochs=1, max_steps=4, hflip=False,
                      out=str(tmp_path / "arc"), callbacks=[Checkpointer()])
    assert run.summary["epochs_run"] == 1
    embedder = Embedder.load(run.dir)
    assert torch.count_nonzero(embedder.model.head.bias) == 0
    v = embedder.embed([np.zeros((8, 8), np.uint8), np.full((8, 8), 200, np.uint8)])
    assert v.shape == (2, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
