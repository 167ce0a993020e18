"""Nothing outside `ocula/modality` asks which modality it has (issue 24), proven from the AST of every module.

A modality question is any of:
    membership    "backbone" / "time_flip" / "frames" / "frame_diff" in spec.defaults or modality.flips (defaults: also
                  .get(key) and [key])
    rank          .ndim, .dim() or len(x.shape) compared with (or offset by) 4 or 5: a sample's rank
    modality ==   an equality test on a `.modality` attribute
    name          a comparison with the literal "image" or "video" (or a collection of only those)
    option        a read of the video option section (cfg.video.*) outside config, cli and the modality
The modality answers these instead (`Modality.flips`, `default_frame_encoder`, `model_options`, `configured`,
`map_dims`, `stills`, `batch`). bench/modality_branches.py keeps its regex count; this is the precise check.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ocula"
OWNER = "modality"  # the package allowed to ask
OPTION_READERS = {"config.py", "config_sections.py", "cli.py"}  # define or parse the video section
MODALITY_KEYS = {"backbone", "time_flip", "frames", "frame_diff"}
MODALITY_NAMES = {"image", "video"}
SAMPLE_RANKS = {4, 5}  # images (B, C, H, W), clips (B, T, C, H, W)
CONTAINERS = {"defaults", "flips"}  # a registry spec's builder defaults, a modality's flips
# Rank tests about weights and feature maps, not samples: (module, function) → why.
NOT_ABOUT_SAMPLES = {
    ("models/pretrained.py", "_match_by_order"): "a conv kernel (out, in, kh, kw) is 4-D",
    ("models/pretrained.py", "_is_input_conv"): "a conv kernel (out, in, kh, kw) is 4-D",
    ("explain/targets.py", "_as_nchw"): "a CAM layer's output must be a (N, C, h, w) feature map",
}


@dataclass(frozen=True)
class Question:
    line: int
    kind: str  # membership | rank | modality == | name | option
    function: str  # the enclosing function ("" at module level)
    code: str


def _is_rank(node: ast.AST) -> bool:
    """x.ndim, x.dim(), len(x.shape)."""
    if isinstance(node, ast.Attribute) and node.attr == "ndim":
        return True
    if isinstance(node, ast.Call) and not node.args and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "dim":
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"
            and len(node.args) == 1 and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "shape")


def _is_sample_rank(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value in SAMPLE_RANKS


def _is_container(node: ast.AST, attrs=CONTAINERS) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in attrs


def _is_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in MODALITY_KEYS


def _names_modality(node: ast.AST) -> bool:
    """The literal "image" or "video", or a tuple, list or set of only those (a CSV column list that includes
    "image" names a column, not a modality)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_names_modality(e) for e in node.elts)
    return isinstance(node, ast.Constant) and node.value in MODALITY_NAMES


def _is_config(node: ast.AST) -> bool:
    """cfg, self.cfg, trainer.loader_cfg, config: a TrainConfig by its name."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith(("cfg", "config"))


class _Finder(ast.NodeVisitor):
    def __init__(self, source: str, reads_options: bool):
        self.source, self.reads_options = source, reads_options
        self.scope: list[str] = []
        self.found: list[Question] = []

    def _add(self, node: ast.AST, kind: str) -> None:
        code = ast.get_source_segment(self.source, node) or ""
        self.found.append(Question(node.lineno, kind, ".".join(self.scope), " ".join(code.split())))

    def _scoped(self, node) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        for left, op, right in zip(sides, node.ops, sides[1:]):
            if isinstance(op, (ast.In, ast.NotIn)) and _is_key(left) and _is_container(right):
                self._add(node, "membership")
            elif (_is_rank(left) and _is_sample_rank(right)) or (_is_rank(right) and _is_sample_rank(left)):
                self._add(node, "rank")
            elif isinstance(op, (ast.Eq, ast.NotEq)) and any(
                    isinstance(s, ast.Attribute) and s.attr == "modality" for s in (left, right)):
                self._add(node, "modality ==")
            elif _names_modality(left) or _names_modality(right):
                self._add(node, "name")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        sides = (node.left, node.right)
        if any(_is_rank(a) and _is_sample_rank(b) for a, b in (sides, sides[::-1])):
            self._add(node, "rank")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_container(node.value, {"defaults"}) and _is_key(node.slice):
            self._add(node, "membership")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "get" and _is_container(f.value, {"defaults"}) and node.args \
                and _is_key(node.args[0]):
            self._add(node, "membership")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "video" and _is_config(node.value) and not self.reads_options:
            self._add(node, "option")
        self.generic_visit(node)


def modality_questions(source: str, module: str = "snippet.py") -> list[Question]:
    """Every modality question in `source`; `module` is its path under src/ocula (decides what may read options)."""
    finder = _Finder(source, reads_options=module in OPTION_READERS)
    finder.visit(ast.parse(source))
    return finder.found


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.split("/")[0] != OWNER:
            yield rel, path.read_text()


def _outside_the_modality() -> dict[str, list[Question]]:
    found = {}
    for rel, source in _modules():
        asked = [q for q in modality_questions(source, rel) if (rel, q.function) not in NOT_ABOUT_SAMPLES
                 or q.kind != "rank"]
        if asked:
            found[rel] = asked
    return found


def test_nothing_outside_the_modality_package_asks_which_modality_it_has():
    found = _outside_the_modality()
    listing = "\n".join(f"  {rel}:{q.line} [{q.kind}] {q.code}" for rel, qs in found.items() for q in qs)
    assert not found, f"modality questions outside ocula/{OWNER}/ (ask the Modality instead):\n{listing}"


def test_every_exemption_still_has_its_rank_test():
    """An exemption whose function lost its rank test (or was renamed) is removed, not kept as a hole."""
    sources = dict(_modules())
    for (rel, function), why in NOT_ABOUT_SAMPLES.items():
        kinds = [q.kind for q in modality_questions(sources.get(rel, ""), rel) if q.function == function]
        assert "rank" in kinds, f"{rel}:{function} is exempt ({why}) but has no rank test any more"


PLANTED = {
    "membership": ['if "backbone" in spec.defaults: pass', 'ok = "time_flip" not in modality.flips',
                   'n = spec.defaults.get("frames")', 'b = spec.defaults["backbone"]'],
    "rank": ["if x.dim() == 5: pass", "clip = images.ndim >= 5", "if len(x.shape) != 4: pass",
             "lead = (1,) * (x.dim() - 4)", "ok = 4 < x.ndim"],
    "modality ==": ["if spec.modality == other.modality: pass", "if meta.modality != kind: pass"],
    "name": ['if clf.modality.name == "video": pass', 'if kind in ("image", "video"): pass',
             'if "video" != meta.get("task"): pass'],
    "option": ["pad = cfg.video.clip_pad", "n = self.cfg.video.frames", "t = trainer.loader_cfg.video"],
}


@pytest.mark.parametrize("kind,line", [(k, line) for k, lines in PLANTED.items() for line in lines])
def test_a_planted_modality_branch_is_caught(kind, line):
    snippet = textwrap.dedent(f"""
        def build(cfg, spec, modality, x, images, clf, meta, kind, other, trainer):
            {line}
    """)
    found = modality_questions(snippet, "engine/setup.py")
    assert [q.kind for q in found] == [kind], found
    assert found[0].function == "build" and found[0].line == 3


def test_generic_code_is_not_a_modality_question():
    """What the seam itself looks like: asking the modality, and shape code that is not about samples."""
    snippet = textwrap.dedent("""
        def fine(self, cfg, spec, modality, x, tokens, kwargs, key, column):
            encoder = modality.default_frame_encoder(spec.defaults)
            flips = {k: getattr(cfg.augment, k) for k in modality.flips}
            if key not in modality.flips: pass
            if tokens.dim() != 3 and x.ndim == 2: pass
            x = modality.batch(x) if x.dim() != modality.sample_dims + 1 else x
            if "patch_size" in spec.defaults: pass
            b = kwargs["backbone"]
            use = self.flips["time_flip"]["use"]  # the run's decisions, not the modality's flips
            if column in ("path", "file", "image"): pass
            if cfg.model.name == "seed_cnn": pass
            return cfg.augment.time_flip, modality.configured(cfg).frames
    """)
    assert modality_questions(snippet, "engine/setup.py") == []


def test_config_and_cli_may_read_the_video_section():
    assert modality_questions("pad = cfg.video.clip_pad", "cli.py") == []
    assert [q.kind for q in modality_questions("pad = cfg.video.clip_pad", "api.py")] == ["option"]


# ---------------------------------------------------------------------------- what the modality answers now
def test_video_options_come_from_the_configured_modality():
    from ocula.config import build_config
    from ocula.data.contract import DataContract
    from ocula.modality import IMAGE, named

    cfg = build_config("clips/", model="cnn_lstm", frames=5, clip_pad="reject")
    video = named("video").configured(cfg)
    contract = video.complete_contract(DataContract(input_size=32, channels=3), {"frames": 8})
    assert contract.frames == 5 and video.bundle_fields() == {"modality": "video", "clip_pad": "reject"}
    default = named("video").complete_contract(DataContract(input_size=32, channels=3), {"frames": 8})
    assert default.frames == 8 and named("video").bundle_fields()["clip_pad"] == "repeat"
    assert IMAGE.configured(cfg) is IMAGE and IMAGE.bundle_fields() == {"modality": "image"}


def test_the_frame_encoder_is_the_modality_s_choice():
    from ocula.config import build_config
    from ocula.data.contract import DataContract
    from ocula.engine.input_choice import default_backbone
    from ocula.engine.setup import build_model
    from ocula.errors import OculaError
    from ocula.models.registry import get_spec
    from ocula.modality import IMAGE, named

    small, large = DataContract(input_size=32, channels=3, frames=4), DataContract(input_size=112, channels=3, frames=4)
    encoder, why = default_backbone(build_config("clips/", model="cnn_lstm"), small)
    assert encoder == "seed_cnn" and "resnet18 would pool" in why
    assert default_backbone(build_config("clips/", model="cnn_lstm"), large) == (None, "")
    assert default_backbone(build_config("clips/", model="cnn_lstm", backbone="resnet18"), small) == (None, "")
    assert default_backbone(build_config("clips/", model="seed_lstm"), small) == (None, "")  # runs no encoder
    assert default_backbone(build_config("data/", model="seed_cnn"), small) == (None, "")

    video, lstm = named("video"), get_spec("cnn_lstm").defaults
    assert video.model_options(small, lstm, {"hidden": 8}, fallback_encoder="seed_cnn") == \
        {"hidden": 8, "frames": 4, "backbone": "seed_cnn"}
    assert video.model_options(small, lstm, {"backbone": "mine"}, fallback_encoder="seed_cnn")["backbone"] == "mine"
    assert video.model_options(small, lstm, {"backbone": "mine"}, frame_encoder="resnet34", hub_weights=True) == \
        {"backbone": "resnet34", "frames": 4, "backbone_pretrained": True}
    assert video.model_options(small, get_spec("seed_lstm").defaults, {}, fallback_encoder="seed_cnn",
                               hub_weights=True) == {"frames": 4}
    assert IMAGE.model_options(small, {}, {"drop_rate": 0.1}, frame_encoder="x") == {"drop_rate": 0.1}
    with pytest.raises(OculaError, match="no --backbone option"):
        build_model(build_config("data/", model="seed_cnn", backbone="resnet18"), small, 3)
    model = build_model(build_config("clips/", model="cnn_lstm"), small, 3)
    assert model.ocula_arch["kwargs"]["backbone"] == "seed_cnn" and model.ocula_arch["kwargs"]["frames"] == 4


def test_augmentation_receives_the_modality_s_flips():
    from ocula.config import build_config
    from ocula.data.contract import DataContract
    from ocula.engine.setup import make_augment
    from ocula.modality import IMAGE, named

    clip = DataContract(input_size=16, channels=3, frames=4)
    cfg = build_config("clips/", model="cnn_lstm", augment="light", hflip=False, time_flip=True)
    clips = make_augment(cfg, clip, 2, named("video"))
    assert clips.time_flip is True and clips.hflip is False
    image = make_augment(build_config("data/", augment="light", hflip=True, time_flip="auto"),
                         DataContract(input_size=16, channels=3), 2, IMAGE)  # images have no time_flip: never asked
    assert image.hflip is True and not hasattr(image, "time_flip")
