"""`ocula audit DATA [--model M] [--folds K] [--epochs N] [--out DIR] [--write-clean CSV]`."""
from __future__ import annotations

from ocula.audit.findings import CATEGORIES
from ocula.errors import unknown


def register(subparsers) -> dict:
    p = subparsers.add_parser("audit", help="find broken files, duplicates, leakage, label errors and outliers",
                              description="Audit a dataset; writes report.md, report.html and issues.json. "
                              "Never modifies or deletes your files.")
    p.add_argument("data", help="built-in name (fashion-mnist, digits), folder or CSV manifest")
    p.add_argument("--model", help="quick model for the label check (default: vgg_bn at native size)")
    p.add_argument("--folds", type=int, default=5, help="K-fold for out-of-fold predictions; 0 = no label/outlier "
                   "check (default: 5)")
    p.add_argument("--epochs", type=int, help="epochs per fold (default: by dataset size)")
    p.add_argument("--img-size", type=int, help="training size for the label check (default: native)")
    p.add_argument("--splits", help="comma-separated splits to audit (default: all)")
    p.add_argument("--out", default="audit", help="report folder (default: ./audit)")
    p.add_argument("--write-clean", metavar="CSV", help="also write a path,label,split manifest without flagged files")
    p.add_argument("--keep", default="", help="comma-separated categories that --write-clean should not drop, "
                   "e.g. outlier,label-issue")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the label-check models (default: 0)")
    return {"audit": run_audit}


def run_audit(args) -> int:
    from ocula.audit.api import audit  # lazy: the audit pulls the whole engine; ocula --help does not

    keep = [k.strip() for k in args.keep.split(",") if k.strip()]
    for k in keep:
        if k not in CATEGORIES:
            raise unknown("category", k, CATEGORIES)
    splits = [s.strip() for s in args.splits.split(",")] if args.splits else None
    result = audit(args.data, model=args.model, folds=args.folds, epochs=args.epochs, img_size=args.img_size,
                   splits=splits, out=args.out, seed=args.seed)
    print(f"audited {result.stats['samples']} samples of {result.source}: {len(result.findings)} findings")
    for category, n in result.counts.items():
        if category in CATEGORIES:
            print(f"  {category:20s} {n}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"report: {args.out}/report.md, report.html, issues.json")
    if args.write_clean:
        rows = result.write_clean(args.write_clean, exclude=keep)
        print(f"clean manifest: {args.write_clean} ({rows} of {result.stats['samples']} samples kept)")
    return 0
