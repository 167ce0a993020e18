"""Clips end to end: sampling, decoding real H.264 files and frame folders, scans with bad clips,
batch augmentation of clips, the moving-shapes generator, and train → evaluate → predict agreeing."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

import ocula
from ocula.modality.video.augment import ClipAugment, select_frames
from ocula.data.contract import DataContract
from ocula.data.samples import FileSamples
from ocula.errors import OculaError
from ocula.modality.video.decode import BadClipError, clip_indices, read_clip, segment_indices, uniform_indices
from ocula.modality.video.moving_shapes import generate, write_moving_shapes

C32 = DataContract(input_size=32, channels=3, mean=(0.5,), std=(0.5,), frames=8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same moving-shapes clips (8 frames, 32 px) as H.264 .mp4 files and as PNG frame folders."""
    root = tmp_path_factory.mktemp("clips")
    for fmt in ("mp4", "frames"):
        write_moving_shapes(root / fmt, per_class=6, test_per_class=2, frames=8, size=32, fmt=fmt, seed=3)
    return root


@pytest.fixture(scope="module")
def video_run(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "clips"
    ocula.train(str(clips / "mp4"), model="cnn_lstm", backbone="seed_cnn", frames=8, img_size=32, epochs=2,
                batch_size=4, out=str(out), workers=0)
    return str(out)


def test_uniform_and_segment_sampling():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]  # the centre of each quarter
    assert uniform_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short clips: each frame held longer
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = segment_indices(16, 4, rng)
        assert all(4 * i <= j < 4 * (i + 1) for i, j in enumerate(idx))
    with pytest.raises(BadClipError, match="only 3 frames"):
        clip_indices(3, 6, pad="reject")


def test_mp4_and_frame_folder_decode_to_the_same_motion(clips):
    mp4 = sorted((clips / "mp4" / "train" / "down").glob("*.mp4"))[0]
    folder = clips / "frames" / "train" / "down" / mp4.stem
    a, b = read_clip(mp4, C32), read_clip(folder, C32)
    assert a.shape == b.shape == (8, 3, 32, 32) and a.dtype == torch.uint8
    assert (a.float() - b.float()).abs().mean() < 20  # H.264 is lossy (worst on the noise background)
    rows = torch.arange(32.0)
    for clip in (a, b):
        bright = (clip.float().mean(1) > 120).float()  # (T, H, W) the shape's pixels
        centre_y = (bright.sum(2) * rows).sum(1) / bright.sum((1, 2))
        assert (centre_y.diff() > 0).all()  # 'down' moves down, frame after frame


def test_generator_classes_are_time_reversals():
    x, y, classes = generate(20, motion="horizontal", frames=6, size=32, seed=1)
    assert classes == ["left", "right"] and x.shape == (40, 6, 32, 32, 3) and np.bincount(y).tolist() == [20, 20]
    bright = (x.mean(-1) > 120)
    cols = np.arange(32)
    cx = (bright.sum(2) * cols).sum(-1) / bright.sum((2, 3))  # (N, T)
    moves = np.sign(cx[:, -1] - cx[:, 0])
    assert (moves[y == classes.index("right")] > 0).all() and (moves[y == classes.index("left")] < 0).all()


def test_scan_counts_and_skips_bad_clips(clips, tmp_path):
    from ocula.modality.sources import resolve_data
    from ocula.modality.video.loader import cache_clips

    root = tmp_path / "data"
    shutil.copytree(clips / "mp4" / "train", root)
    (root / "up" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    (root / "up" / "empty.mp4").write_bytes(b"")
    (root / "down" / ".DS_Store").write_bytes(b"junk")
    data = resolve_data(str(root), val_fraction=0.0)
    assert data.modality == "video" and data.classes == ["down", "up"]
    assert [p for p, _ in data.skipped] == [str(root / "up" / "empty.mp4")]
    cached, skipped = cache_clips(data.train, C32, workers=0)
    assert len(cached) == 12 and cached.images.shape == (12, 8, 3, 32, 32)
    assert len(skipped) == 1 and skipped[0][0].endswith("broken.mp4") and "cannot decode" in skipped[0][1]
    short = FileSamples([str(root / "up" / sorted(p.name for p in (root / "up").glob("clip*"))[0])], [1])
    long_contract = DataContract(input_size=32, channels=3, frames=12)
    _, rejected = cache_clips(short, long_contract, pad="reject", workers=0)
    assert "fewer than the 12 required" in rejected[0][1]
    padded, _ = cache_clips(short, long_contract, pad="repeat", workers=0)
    assert padded.images.shape[1] == 12


def test_batch_augment_moves_all_frames_of_a_clip_together():
    frame = torch.randint(0, 255, (1, 1, 3, 16, 16), dtype=torch.uint8)
    x = frame.expand(4, 6, 3, 16, 16).contiguous()  # 4 clips of 6 identical frames
    contract = DataContract(input_size=16, channels=3, frames=3)
    out, _ = ClipAugment(contract, "strong")(x, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 3, 16, 16)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # one draw per clip
    assert not torch.equal(out[0, 0], out[1, 0])  # different draws between clips
    ramp = torch.arange(6).view(1, 6, 1, 1, 1).expand(50, 6, 1, 1, 1)
    jittered = select_frames(ramp, 3, torch.Generator().manual_seed(0))[..., 0, 0, 0]
    assert ((jittered // 2) == torch.arange(3)).all() and jittered.unique().numel() == 6
    assert select_frames(ramp, 3)[0, :, 0, 0, 0].tolist() == [1, 3, 5]


def test_image_model_on_clips_is_a_clear_error(clips):
    with pytest.raises(OculaError, match="video model"):
        ocula.train(str(clips / "mp4"), model="seed_cnn", epochs=1)
    with pytest.raises(OculaError, match="takes clips"):
        ocula.train("digits", model="cnn_lstm", epochs=1)


@pytest.mark.parametrize("fmt", ["mp4", "frames"])
def test_predict_gives_the_label_evaluation_gives(video_run, clips, tmp_path, fmt):
    """A real .mp4 and a frame folder: `predict` agrees with `evaluate` on that very clip."""
    clf = ocula.load(video_run)
    assert clf.meta["modality"] == "video" and clf.meta["task"] == "single-label"
    assert clf.contract.frames == 8 and clf.contract.input_size == 32
    assert clf.meta["calibration"]["method"] in ("temperature", "none") and clf.meta["calibration"]["reason"]
    for cls in ("down", "up"):
        clip = sorted((clips / fmt / "test" / cls).iterdir())[0]
        one = tmp_path / fmt / cls / cls / clip.name  # a dataset of this one clip, in its class folder
        one.parent.mkdir(parents=True)
        (shutil.copytree if clip.is_dir() else shutil.copy)(clip, one)
        report = ocula.evaluate(clf, str(tmp_path / fmt / cls))
        evaluated = clf.classes[int(np.argmax(report["confusion_matrix"][clf.classes.index(cls)]))]
        predicted = list(ocula.predict(clf, [str(clip)], topk=2))
        assert len(predicted) == 1 and predicted[0].error is None and len(predicted[0].topk) == 2
        assert predicted[0].label == evaluated
        assert clf.predict(str(clip)).label == evaluated  # the in-process path agrees too


def test_cli_make_train_evaluate_predict(tmp_path, capsys, video_run, clips):
    from ocula.cli import main

    assert main(["datasets", "make", "moving-shapes", str(tmp_path / "ms"), "--clips", "2", "--frames", "6",
                 "--format", "frames"]) == 0
    made = sorted((tmp_path / "ms" / "train" / "up").iterdir())
    assert len(made) == 2 and len(list(made[0].glob("*.png"))) == 6
    assert main(["predict", video_run, str(clips / "mp4" / "test"), str(tmp_path / "missing.mp4"), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(".mp4") == 5 and "no such file" in out  # 4 test clips, then the missing one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["evaluate", video_run, str(clips / "frames"), "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "report.json").is_file()


def test_decoding_workers_start_from_a_forkserver_and_decode_what_the_main_process_does(clips):
    """A DataLoader worker forked after the parent decoded clips hung in FFmpeg's slice threads; workers now
    start from a forkserver (so the dataset must pickle), and a single batch is decoded in-process."""
    from ocula.modality.video.loader import ClipLoader, decode_workers

    assert decode_workers(None, 1, 16) == 0 and decode_workers(4, 40, 16) == 3 and decode_workers(0, 99, 4) == 0
    train = sorted((clips / "mp4" / "train").rglob("*.mp4"))
    samples = FileSamples([str(p) for p in train], [int(p.parent.name == "up") for p in train])
    batches = {}
    for workers in (0, 2):
        loader = ClipLoader(samples, C32, 4, train=False, workers=workers)
        assert loader.loader.multiprocessing_context is None if workers == 0 else \
            loader.loader.multiprocessing_context.get_start_method() == "forkserver"
        batches[workers] = [(x, y) for x, y, _, _ in loader]
    assert len(batches[2]) == len(batches[0]) == 3
    for (a, ya), (b, yb) in zip(batches[0], batches[2]):
        assert torch.equal(a, b) and torch.equal(ya, yb)
