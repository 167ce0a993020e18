"""The report's HTML: a jinja2 template (templates/report.html.j2) over the collected sections.

One self-contained file: styles are in the page, pictures are data: URIs, nothing is fetched, so it
reads offline and can be attached to a ticket.
"""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Optional

from ocula.errors import OculaError
from ocula.io import write_text
from ocula.report import charts
from ocula.report.collect import collect_run
from ocula.run_dir import RunDir
from ocula.version import __version__

TEMPLATE = "report.html.j2"


def _environment():
    try:
        import jinja2
    except ImportError:
        raise OculaError("the report needs jinja2: pip install jinja2") from None
    env = jinja2.Environment(loader=jinja2.PackageLoader("ocula.report", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, mb=_mb, duration=_duration, count=_count, code=_code)
    return env


def _code(text) -> str:
    """Escape `text`, then show its `backquoted` parts (commands to run) as <code>."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _missing(v) -> bool:
    from jinja2 import Undefined

    return v is None or isinstance(v, Undefined) or v == "" or (isinstance(v, float) and math.isnan(v))


def _float(v) -> Optional[float]:
    try:
        return None if _missing(v) else float(v)
    except (TypeError, ValueError):
        return None


def _pct(v, digits: int = 2) -> str:
    f = _float(v)
    return "–" if f is None else f"{100 * f:.{digits}f} %"


def _num(v, digits: int = 4) -> str:
    f = _float(v)
    if f is None:
        return "–" if _missing(v) else str(v)
    if isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
        return str(int(f))
    return f"{f:.{max(digits - 1, 1)}e}" if f and abs(f) < 10 ** -digits else f"{f:.{digits}f}"


def _mb(v) -> str:
    f = _float(v)
    return "–" if f is None else f"{f / 1e6:.2f} MB"


def _count(v) -> str:
    f = _float(v)
    return "–" if f is None else f"{int(f):,}"


def _duration(v) -> str:
    f = _float(v)
    if f is None:
        return "–"
    if f < 120:
        return f"{f:.1f} s"
    return f"{int(f // 60)} min {f % 60:.0f} s" if f < 3600 else f"{int(f // 3600)} h {int(f % 3600 // 60)} min"


def inline_images(sections) -> dict:
    """{section key: {image name: "data:image/png;base64,…" or None when it could not be had}}."""
    out: dict = {}
    for section in sections:
        out[section.key] = {}
        for name, spec in section.images.items():
            png = charts.picture(spec)
            out[section.key][name] = "data:image/png;base64," + base64.b64encode(png).decode() if png else None
    return out


def render_report(run, *, eval_dir=None, audit_dir=None, summary=None) -> str:
    """The report page of `run` as HTML text."""
    info = collect_run(run, eval_dir=eval_dir, audit_dir=audit_dir, summary=summary)
    sections = {s.key: s for s in info["sections"]}
    return _environment().get_template(TEMPLATE).render(
        run=info, sections=info["sections"], s=sections, images=inline_images(info["sections"]),
        ocula_version=__version__)


def write_report(run, out=None, *, eval_dir=None, audit_dir=None, summary=None) -> str:
    """Write RUN/report.html (or `out`); → its path."""
    html = render_report(run, eval_dir=eval_dir, audit_dir=audit_dir, summary=summary)
    default = RunDir(run).report_html
    path = Path(out) if out else default
    if path.is_dir():
        path = path / default.name
    write_text(path, html)
    return str(path)
