"""Issue 28: clip decoding before and after seeking, side by side on one long video.

    python bench/clip_decode.py [--seconds 60] [--size 640x360] [--fps 30] [--frames 16] [--repeats 3]

Writes a generated video (a photo panning, H.264, x264's default keyframe interval of 250 frames and a
second one with a keyframe every 30 frames, as phones write), then reads 16 frames sampled across it
(`decode.uniform_indices`) with the decoder decoding forward from frame 0 (`seek=False`, the decoder before
issue 28) and seeking to the keyframe before each frame (`seek=True`), interleaved, best of `--repeats`,
and checks the frames are identical. Writes docs/bench/clip_decode.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402


def pan_frames(seconds: int, fps: int, w: int, h: int):
    import skimage.data as sk

    photo = np.tile(sk.astronaut(), (1, 4, 1))  # 512 x 2048: the window pans across it over the video
    for i in range(seconds * fps):
        x = int(i * (photo.shape[1] - w) / (seconds * fps))
        yield photo[:h, x:x + w]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="docs/bench/clip_decode.json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from ocula.data.synth_clips import write_video
    from ocula.modality.video import decode

    info = print_machine()
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (250, 30):
            path = str(Path(tmp) / f"long_g{gop}.mp4")
            write_video(path, pan_frames(args.seconds, args.fps, w, h), fps=args.fps, crf=23,
                        options={"g": str(gop), "tune": "film"})
            times = {False: [], True: []}
            out = {}
            for _ in range(args.repeats):
                for seek in (False, True):  # interleaved: the same load on both
                    t0 = time.perf_counter()
                    out[seek] = decode._read_video(path, lambda n: decode.uniform_indices(n, args.frames), seek=seek)
                    times[seek].append(time.perf_counter() - t0)
            same = bool(torch.equal(out[False], out[True]))
            row = {"video": f"{args.seconds} s {w}x{h} {args.fps} fps H.264 (B-frames), keyframe every {gop}",
                   "frames_sampled": args.frames, "decode_from_start_s": round(min(times[False]), 3),
                   "seeking_s": round(min(times[True]), 3), "speedup": round(min(times[False]) / min(times[True]), 1),
                   "all_times_s": {"from_start": [round(t, 3) for t in times[False]],
                                   "seeking": [round(t, 3) for t in times[True]]}, "identical_frames": same}
            print(row, flush=True)
            rows.append(row)
    from ocula.io import write_json

    write_json(args.json, {"machine": info, "command": " ".join(sys.argv), "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
