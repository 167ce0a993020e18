"""Clip decoding: seeking to keyframes returns exactly the frames a full decode returns, and a phone's
rotation tag turns the frames upright."""
from __future__ import annotations

import numpy as np
import pytest

from ocula.data.contract import DataContract
from ocula.data.synth_clips import write_video
from ocula.modality.video import decode


def _frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Frames that differ from each other everywhere: frame i is a gradient shifted by i pixels."""
    ramp = (np.arange(w)[None, :] * 5 + np.arange(h)[:, None] * 3) % 256
    return np.stack([np.repeat(((ramp + 7 * i) % 256)[..., None], 3, axis=2) for i in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("options", [{"g": "6"}, {"g": "10", "tune": "film"}], ids=["keyframes", "b-frames"])
def test_seeking_returns_the_frames_of_a_full_decode(tmp_path, options):
    path = str(tmp_path / "v.mp4")
    write_video(path, _frames(60), options=options)
    for wanted in (np.array([0, 7, 13, 29, 30, 44, 59]), np.array([5, 5, 58]), decode.uniform_indices(60, 8)):
        seeking, _ = decode._decode_frames(path, wanted, seek=True)
        forward, _ = decode._decode_frames(path, wanted, seek=False)
        assert sorted(seeking) == sorted(forward) == sorted(set(wanted.tolist()))
        for i in forward:
            np.testing.assert_array_equal(seeking[i], forward[i])


def test_seeking_skips_decoding(tmp_path, monkeypatch):
    """Two frames far apart in a long GOP-6 video: the seeking path decodes a fraction of the frames."""
    path = str(tmp_path / "v.mp4")
    write_video(path, _frames(120), options={"g": "6"})
    import av

    decoded = {"n": 0}
    real = av.container.InputContainer.decode

    def counting(self, *a, **k):
        for frame in real(self, *a, **k):
            decoded["n"] += 1
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", counting)
    decode._decode_frames(path, np.array([3, 115]), seek=True)
    seeking = decoded["n"]
    decoded["n"] = 0
    decode._decode_frames(path, np.array([3, 115]), seek=False)
    assert decoded["n"] == 116 and seeking <= 20


def test_rotation_tag_turns_frames_upright(tmp_path):
    frames = np.zeros((4, 16, 32, 3), np.uint8)
    frames[:, :, :8] = 255  # a white band on the left of a landscape frame
    path = str(tmp_path / "phone.mp4")
    write_video(path, frames, rotation=90)  # 90° counter-clockwise to show: the band goes to the bottom
    contract = DataContract(input_size=16, channels=3, frames=4, crop_pct=1.0)
    raw = decode._read_video(path, lambda n: decode.uniform_indices(n, 4))
    assert raw.shape == (4, 3, 32, 16)  # portrait
    band = raw[0, 0].float().mean(1)  # mean over columns, per row
    assert band[-8:].min() > 200 and band[:16].max() < 50
    assert decode.read_clip(path, contract).shape == (4, 3, 16, 16)
