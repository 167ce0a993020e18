"""An ocula model from pretrained weights, with no training: `ocula import NAME --pretrained FILE`.

    out = import_model("efficientnet_lite0", pretrained="efficientnet-lite0.pth", out="runs/lite0")
    ocula.load(out).predict("cat.jpg", topk=5)      # ImageNet class names

The bundle is what a training run saves (weights/best.safetensors and model.json, see ocula.bundle),
so predict, evaluate, serve, export, explain and embed take it like any run. Its classes are timm's
ImageNet-1k names (`timm.data.ImageNetInfo`), or the names of `classes` (a file, one per line) for a
head of another class count (hub weights whose config names their classes, timm's `label_names`, need
no file); its preprocessing is timm's data config of the built model (`resolve_model_data_config`:
input size, mean/std, interpolation, crop_pct); its task is single-label with no temperature, since no
held-out data was seen to fit one (`ocula calibrate` can fit it later).

`name` may be a hub name (`hf-hub:ORG/NAME`, `local-dir:PATH`); hub weights then come from that repo
(or the Hugging Face cache) or folder, and the bundle records the timm architecture and config it
names, so it needs neither afterwards.

The weights load through `engine.weights.load_weights`, with all its rules (no code from pickles,
names or order, prefixes); an import refuses what a fine-tune would accept: a classifier that does not
fit the class names (it would be random) or any model tensor the file lacks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ocula import bundle
from ocula.engine.setup import unique_run_dir
from ocula.engine.weights import classifier_keys, load_weights, read_weights
from ocula.errors import OculaError
from ocula.log import logger
from ocula.modality import for_model
from ocula.models import hub
from ocula.models.registry import check_model_name, create_model, default_contract, get_spec, safe_name
from ocula.run_dir import RunDir
from ocula.tasks import SingleLabelTask

IMAGENET_CLASSES = 1000


def import_model(name: str, pretrained: Union[bool, str] = True, out: Optional[str] = None,
                 classes: Optional[str] = None) -> str:
    """Write an ocula bundle of `name` with `pretrained` weights (a file, or True: timm's hub) → its
    directory. `classes`: a text file naming the head's classes, one per line (default: ImageNet-1k)."""
    check_model_name(name)
    if pretrained is False or pretrained is None:
        raise OculaError("import needs weights: --pretrained FILE, or --pretrained alone for timm's hub weights")
    source, hub_cfg = None, None
    if pretrained is True:
        hub_cfg = _check_hub_allowed(name)
    else:
        source = read_weights(pretrained)
        if source.is_ocula:
            raise OculaError(f"{pretrained} is already an ocula model: predict, serve or export it as it is")
    names, origin = _class_names(classes, name, hub_cfg)
    target = Path(out or _default_out(name))
    _check_out(target)

    model = create_model(name, len(names), 3, None, pretrained=pretrained is True)
    load = f"{_hub_label(name)} weights"
    if source is not None:
        report = load_weights(model, source)
        if report.head_reset:
            found = _file_head_outputs(source.state_dict, classifier_keys(model))
            has = f"{found} outputs" if found else "another class count"
            raise OculaError(f"{source.path}: its classifier has {has}, not the {len(names)} classes of {origin}"
                             + ("" if classes else ": pass --classes FILE naming its classes, one per line"))
        if report.missing:
            raise OculaError(f"{source.path}: {len(report.missing)} tensors of '{name}' are not in the file "
                             f"({', '.join(report.missing[:3])}{' …' if len(report.missing) > 3 else ''}): "
                             f"an imported model must not keep random weights")
        if report.unexpected:
            logger.warning(f"{len(report.unexpected)} tensors of the file are not used ({report.unexpected[0]} …)")
        load = report.summary()
        logger.info(f"weights: {load}")

    modality = for_model(name)
    contract = modality.complete_contract(default_contract(name, channels=3, model=model), {})
    task = SingleLabelTask()  # temperature 1, calibration "none": nothing held out was seen
    meta = bundle.make_meta(dict(model.ocula_arch), contract, names, **task.bundle_fields(),
                            **modality.bundle_fields(),
                            imported={"weights": str(source.path) if source else _hub_label(name), "load": load,
                                      "classes": origin})
    run = RunDir(target)
    bundle.save_weights(run.weights("best"), model.eval(), meta)
    run.write_model(meta)
    return str(target)


def _check_hub_allowed(name: str) -> dict:
    """Hub weights: refused up front offline (as built-in datasets are) unless they are read from disk
    (a local-dir name, or the Hugging Face client kept to its cache, HF_HUB_OFFLINE=1) → the pretrained
    config of those weights (their class count and names)."""
    if get_spec(name) is not None:
        raise OculaError(f"'{name}' is one of ocula's own families: it has no hub weights; pass --pretrained FILE")
    on_disk = hub.split_source(name)[0] == hub.LOCAL_DIR or hub.cache_only()
    if os.environ.get("OCULA_OFFLINE", "").lower() in ("1", "true", "yes") and not on_disk:
        raise OculaError(f"OCULA_OFFLINE is set: cannot fetch hub weights for '{name}'; "
                         f"pass a local file instead: --pretrained path/to/weights.pth "
                         f"(or set HF_HUB_OFFLINE=1 to read the Hugging Face cache)")
    if hub.is_hub_name(name):
        return hub.read_config(name)[1]
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _hub_label(name: str) -> str:
    return name if hub.is_hub_name(name) else "timm hub"


def _class_names(classes: Optional[str], name: str = "", hub_cfg: Optional[dict] = None) -> tuple[list[str], str]:
    """→ (class names, where they came from): the --classes file; else, for hub weights, the names their
    config gives (timm's label_names) or ImageNet-1k's for a 1000-class head; else ImageNet-1k's."""
    if classes is not None:
        return _read_class_file(classes)
    if hub_cfg is None:
        return imagenet_class_names(), "ImageNet-1k"
    outputs = hub_cfg.get("num_classes", IMAGENET_CLASSES)
    named = _config_class_names(hub_cfg, outputs)
    if named:
        return named, f"the config of '{name}'"
    if outputs != IMAGENET_CLASSES:
        what = "no classifier (features only)" if not outputs else f"a {outputs}-class head"
        raise OculaError(f"timm's pretrained '{name}' has {what}, not ImageNet-1k's {IMAGENET_CLASSES} classes"
                         + (": pass --classes FILE naming its classes, one per line" if outputs else ""))
    return imagenet_class_names(), "ImageNet-1k"


def _config_class_names(cfg: dict, outputs: int) -> Optional[list[str]]:
    """timm's `label_names` (with their `label_descriptions` where every one has one), when they name each
    output once; ImageNet-1k's own synset ids are left to `imagenet_class_names`, which reads better."""
    labels = cfg.get("label_names")
    if not isinstance(labels, (list, tuple)) or not labels or len(labels) != outputs:
        return None
    labels = [str(n) for n in labels]
    if outputs == IMAGENET_CLASSES:
        from timm.data import ImageNetInfo

        if labels == list(ImageNetInfo().label_names()):
            return None
    described = cfg.get("label_descriptions") or {}
    shown = [str(described[n]) for n in labels] if all(n in described for n in labels) else labels
    for candidate in (shown, labels):
        if len(set(candidate)) == len(candidate):
            return candidate
    return None


def _read_class_file(classes: str) -> tuple[list[str], str]:
    path = Path(classes)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OculaError(f"no such classes file: {classes}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OculaError(f"{classes}: cannot read the class names ({type(e).__name__})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OculaError(f"{classes}: no class names (one per line)")
    from collections import Counter

    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:  # a name must say which output it is: predictions, folders and the gate map by name
        raise OculaError(f"{classes}: class name {repeated[0]!r} appears more than once")
    return names, str(path)


def imagenet_class_names() -> list[str]:
    """timm's ImageNet-1k descriptions in class order ('tabby, tabby cat', 'espresso', …); the one name
    given twice ('crane': the bird and the machine) gets its WordNet id, so each name is one class."""
    from collections import Counter

    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    twice = {n for n, count in Counter(names).items() if count > 1}
    synsets = info.label_names()
    return [f"{n} ({synsets[i]})" if n in twice else n for i, n in enumerate(names)]


def _file_head_outputs(state: dict, head_keys: set) -> Optional[int]:
    """The class count of the file's classifier, for the error message: by the model's head names,
    else the last 2-D weight in the file (where classifiers sit in the checkpoints timm reads)."""
    named = [state[k] for k in sorted(head_keys) if k in state and state[k].ndim == 2]
    matrices = named or [v for v in state.values() if v.ndim == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _default_out(name: str) -> str:
    return unique_run_dir(str(Path("runs") / f"imported-{safe_name(name)}"))


def _check_out(target: Path) -> None:
    run = RunDir(target)
    if run.weights("best").exists() or run.model.exists():  # what an import writes
        raise OculaError(f"{target} already holds a model ({run.weights('best').relative_to(target).as_posix()}): "
                         "choose another --out")
    if target.exists() and not target.is_dir():
        raise OculaError(f"{target} is a file, not a directory: choose another --out")
