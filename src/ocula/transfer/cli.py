"""`ocula embed`, `ocula similar`, `ocula verify`: thin shells over ocula.transfer."""
from __future__ import annotations

import sys

from ocula.errors import ExitCode, OculaError
from ocula.io import STDOUT, write_json


def register(subparsers) -> dict:
    p = subparsers.add_parser("embed", help="L2-normalised penultimate features of a dataset → .npy or .parquet")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("data", help="folder, CSV manifest or built-in dataset")
    p.add_argument("--out", required=True, help="emb.npy (+ emb.json with paths and labels) or emb.parquet")
    p.add_argument("--split", choices=["train", "val", "test"], help="only this split (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default: 64)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default: the cores, at "
                   "most 4; 0 = in this process)")

    p = subparsers.add_parser("similar", help="the k most similar images of a gallery to each query")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("queries", nargs="+", help="query images")
    p.add_argument("--index", required=True, help="gallery folder (embedded once, cached in RUN/index/) "
                   "or embeddings from `ocula embed` (.npy/.parquet)")
    p.add_argument("--k", type=int, default=5, help="hits per query (default: 5)")
    p.add_argument("--backend", choices=["auto", "torch", "faiss"], default="auto",
                   help="nearest-neighbour search: exact torch matrix products, or faiss HNSW (auto: faiss "
                   "beyond 200,000 vectors when installed)")
    p.add_argument("--json", metavar="PATH", help="write the hits as JSON ('-' for stdout)")

    p = subparsers.add_parser("verify", help="same identity? (first: --calibrate on labelled validation data)")
    p.add_argument("run", help="run directory or .safetensors bundle")
    p.add_argument("images", nargs="*", help="two images to compare")
    p.add_argument("--calibrate", metavar="DATA", help="choose and store the threshold on this labelled data")
    p.add_argument("--split", choices=["train", "val", "test"], help="calibrate on this split (default: all)")
    p.add_argument("--far", type=float, default=0.01, help="target false-accept rate (default 0.01)")
    p.add_argument("--criterion", choices=["far", "eer"], default="far", help="threshold at the target --far "
                   "(default), or at the equal error rate")
    p.add_argument("--threshold", type=float, help="use this threshold instead of the stored one")
    return {"embed": cmd_embed, "similar": cmd_similar, "verify": cmd_verify}


def cmd_embed(args) -> int:
    from ocula.transfer.embed import embed_dataset  # lazy: ocula --help imports no torch

    emb = embed_dataset(args.run, args.data, out=args.out, split=args.split, batch_size=args.batch_size,
                        workers=args.workers)
    print(f"{len(emb)} embeddings of dimension {emb.vectors.shape[1]} written to {args.out}")
    if emb.skipped:
        print(f"skipped {len(emb.skipped)} unreadable files:")
        for path, reason in emb.skipped:
            print(f"  {shown(path)}: {reason}")
    return 0


def shown(path) -> str:
    """A path for the terminal, one line whatever its bytes: undecodable bytes as \\xNN, newlines as \\n."""
    import os

    text = os.fsencode(path).decode("utf-8", "backslashreplace") if isinstance(path, str) else str(path)
    return text.replace("\n", "\\n").replace("\r", "\\r")


def cmd_similar(args) -> int:
    from ocula.transfer.embed import Embedder  # lazy: ocula --help imports no torch
    from ocula.transfer.retrieval import build_index, similar

    embedder = Embedder.load(args.run)
    index = build_index(args.run, args.index, backend=args.backend, embedder=embedder)
    skipped = getattr(index.embeddings, "skipped", None) or []  # only when the gallery was embedded now
    if skipped:
        print(f"gallery: skipped {len(skipped)} unreadable files:", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {shown(path)}: {reason}", file=sys.stderr)
    results = similar(embedder, args.queries, index, k=args.k)
    if args.json:
        write_json(args.json, results)
    if args.json != STDOUT:
        for r in results:
            print(shown(r["query"]))
            for h in r["hits"]:
                label = f"  [{h['label']}]" if h["label"] is not None else ""
                print(f"  {h['score']:.4f}  {shown(h['path'])}{label}")
    return 0


def cmd_verify(args) -> int:
    from ocula.transfer.verify import calibrate, verify_pair  # lazy: ocula --help imports no torch

    if args.calibrate:
        r = calibrate(args.run, args.calibrate, split=args.split, far=args.far, criterion=args.criterion)
        at = r["tar_at_far"][f"{args.far:g}"]
        print(f"{r['images']} images, {r['pairs']['same']} same / {r['pairs']['different']} different pairs: "
              f"EER {r['eer']:.4f}, TAR {at['tar']:.4f} at FAR {at['far']:.4f}, AUC {r['auc']:.4f}")
        print(f"threshold {r['threshold']:.4f} ({r['criterion']}) stored with roc.csv and roc.png")
        return 0
    if len(args.images) != 2:
        raise OculaError("verify needs two images (or --calibrate DATA)")
    r = verify_pair(args.run, *args.images, threshold=args.threshold)
    verdict = "same" if r["same"] else "different"
    print(f"{verdict}: score {r['score']:.4f} {'>=' if r['same'] else '<'} threshold {r['threshold']:.4f}")
    return ExitCode.OK if r["same"] else ExitCode.GATE  # a verdict, not an error: scripts branch on 0 / 3
