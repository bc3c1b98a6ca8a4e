"""``show FILE --html OUT``: a dump as one self-contained page.

An inline SVG of the timeline (RSS against the limit, the soft, hard and critical bands,
the marks as labelled ticks, this dump and the other dumps of its session as points)
beside the verdict, the memory figures and the risks. No network, no script: the page
says so in its Content-Security-Policy too. Every string of the dump is the host's (or
whoever wrote the file): each goes through ``text()``, printable and HTML-escaped.
"""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING

from . import printable
from ._timeline import (
    USAGE_OF,
    Mark,
    Timeline,
    byte_label,
    nice_seconds,
    place_labels,
    seconds,
    size,
    verdict,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._diagnostics import Diagnostics

# The SVG's own units; the page scales it to its column.
WIDTH, HEIGHT = 800, 430
LEFT, RIGHT, TOP, BOTTOM = 74, 690, 84, 384  # the plot area
MARK_ROWS = 3  # rows of mark labels above the plot
ROW = 15  # their spacing
CHAR = 6.7  # the width of a character of the marks' 11 px monospace font
SANS = 6.5  # about that of the other dumps' 11 px labels
MAX_TICK_LABEL = 30  # characters of a label drawn on the plot; the table has them all
MAX_SAMPLE_DOTS = 30  # each sample gets a dot up to this many; beyond, the line alone
PAD = 0.025  # of the time axis, after the dump; of the y axis, above its top

# Each band from its threshold to the next one's (critical: to the limit); above the
# limit, "over". Their colours are in _STYLE.
BANDS = ("soft", "hard", "critical", "over")

# XML has no U+FFFE or U+FFFF, even as a reference; printable() leaves them be.
_NOT_XML = re.compile("[\ufffe\uffff]")


def text(value: object) -> str:
    """A string from the dump as it may go into the page (element text or a quoted
    attribute): printable() (no control character reaches the page, a newline in a
    label shows as ``\\x0a``) and escaped (``<``, ``&``, both quotes)."""
    shown = _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", printable(value))
    return html.escape(shown, quote=True)


def page(dump: Diagnostics, timeline: Timeline) -> str:
    """The whole page, one string."""
    title = f"{dump.trigger} dump of {dump.session_id}"
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<header><h1>{text(dump.trigger)} dump of session <code>{text(dump.session_id)}"
        f"</code></h1>\n<p class=\"when\">{text(dump.timestamp)} &middot; "
        f"level <span class=\"level {_level_class(dump.level)}\">{text(dump.level)}</span>"
        f"</p>\n<p class=\"verdict\">{text(_capital(verdict(dump)))}</p></header>\n",
        "<main>\n<div>\n<figure>\n", svg(dump, timeline), _legend(timeline), "</figure>\n",
        _tables(dump, timeline), "</div>\n<aside>\n", _figures(dump, timeline),
        "</aside>\n</main>\n",
        "<footer>Written by <code>watchdog-core show --html</code>. Bands: thresholds of ",
        f"{text(timeline.thresholds_from)}.</footer>\n</body>\n</html>\n",
    ])


# -- the SVG --------------------------------------------------------------------------------

def svg(dump: Diagnostics, timeline: Timeline) -> str:
    """The timeline as an ``<svg>`` element, well-formed XML on its own."""
    low, high = timeline.x_range()
    high += (high - low) * PAD  # room for the dump's point at the right edge
    top, step, unit = timeline.y_axis()

    def x(t: float) -> float:
        return LEFT + (t - low) / (high - low) * (RIGHT - LEFT)

    def y(value: float) -> float:  # a little room above the top: a limit there stays seen
        return BOTTOM - min(value, top) / (top * (1 + PAD)) * (BOTTOM - TOP)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'role="img" aria-label="RSS against the limit, the last {high - low:.0f} s">\n',
           f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" '
           f'height="{BOTTOM - TOP}"/>\n']
    side: list[tuple[float, str, str]] = []  # labels in the right margin: (y, class, text)
    limit = timeline.limit if timeline.limit_in_view() else None
    if limit is not None:
        edges = [*timeline.thresholds, 1.0, math.inf]
        for name, low_ratio, high_ratio in zip(BANDS, edges, edges[1:], strict=False):
            y_low, y_high = y(low_ratio * limit), y(high_ratio * limit) if (
                high_ratio * limit < top) else TOP
            if y_low - y_high < 0.5:
                continue
            what = "over the limit" if name == "over" else f"{low_ratio:.0%} of the limit"
            out.append(f'<rect class="band {name}" x="{LEFT}" y="{y_high:.1f}" '
                       f'width="{RIGHT - LEFT}" height="{y_low - y_high:.1f}">'
                       f"<title>{name}: {what} and above</title></rect>\n")
            if y_low - y_high >= 12 and name != "over":
                side.append(((y_low + y_high) / 2 + 4, f"band-label {name}",
                             f"{name} {low_ratio:.0%}"))
    for k in range(1, round(top / step) + 1):  # the grid and the y axis's labels
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y(k * step):.1f}" x2="{RIGHT}" '
                   f'y2="{y(k * step):.1f}"/>\n')
    for k in range(round(top / step) + 1):
        out.append(f'<text class="axis" x="{LEFT - 8}" y="{y(k * step) + 4:.1f}" '
                   f'text-anchor="end">{byte_label(k * step, unit)}</text>\n')
    every = nice_seconds(high - low)
    tick = math.ceil(low / every - 1e-9) * every
    while tick <= high + 1e-9:
        out.append(f'<line class="grid" x1="{x(tick):.1f}" y1="{TOP}" x2="{x(tick):.1f}" '
                   f'y2="{BOTTOM}"/>\n<text class="axis" x="{x(tick):.1f}" y="{BOTTOM + 18}" '
                   f'text-anchor="middle">{seconds(tick)}</text>\n')
        tick += every
    out.append(f'<text class="axis title" x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 38}" '
               'text-anchor="middle">seconds before the dump</text>\n')
    if limit is not None:
        out.append(f'<line class="limit" x1="{LEFT}" y1="{y(limit):.1f}" x2="{RIGHT}" '
                   f'y2="{y(limit):.1f}"><title>the limit: {size(limit)}</title></line>\n')
        side.append((y(limit) + 4, "limit-label", f"limit {byte_label(limit, unit)}"))
    elif timeline.limit is not None:
        side.append((TOP + 4, "limit-label", f"limit {size(timeline.limit)} above"))
    out.extend(_marks(timeline.marks, x))
    points = timeline.points
    if points:
        coords = " ".join(f"{x(t):.1f},{y(rss):.1f}" for t, rss in points)
        out.append(f'<polygon class="area" points="{x(points[0][0]):.1f},{BOTTOM} {coords} '
                   f'{x(points[-1][0]):.1f},{BOTTOM}"/>\n'
                   f'<polyline class="rss" points="{coords}"/>\n')
        if len(points) <= MAX_SAMPLE_DOTS:
            out.extend(f'<circle class="sample" cx="{x(t):.1f}" cy="{y(rss):.1f}" r="3">'
                       f"<title>{seconds(t)}: {size(rss)}</title></circle>\n"
                       for t, rss in points)
    else:
        out.append(f'<text class="empty" x="{(LEFT + RIGHT) / 2}" y="{BOTTOM - 24}" '
                   'text-anchor="middle">no samples: the watchdog had not sampled the host '
                   "yet</text>\n")
    drawn = sorted(timeline.drawn_siblings(), key=lambda s: s.t)
    names = [printable(s.trigger) for s in drawn]
    places = place_labels([x(s.t) - len(n) * SANS / 2 for s, n in zip(drawn, names, strict=True)],
                          [len(n) * SANS for n in names], 1, WIDTH)  # one row: no overlap
    for other, name, place in zip(drawn, names, places, strict=True):
        assert other.rss is not None
        label = "" if place is None else (
            f'<text x="{place[1]:.1f}" y="{y(other.rss) + 18:.1f}">{text(name)}</text>')
        out.append(f'<g class="sibling"><title>{text(other.name)}: {text(other.trigger)}, '
                   f"{text(other.level)}, {size(other.rss)}, {other.t:+.2f} s</title>"
                   f'<circle cx="{x(other.t):.1f}" cy="{y(other.rss):.1f}" r="5"/>{label}'
                   "</g>\n")
    if timeline.rss is not None:
        cx, cy = x(0.0), y(timeline.rss)
        out.append(f'<g class="dump"><title>this dump: {text(dump.trigger)}, '
                   f"{size(timeline.rss)}</title>"
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6"/>'
                   f'<text x="{cx - 10:.1f}" y="{cy - 10:.1f}" text-anchor="end">this dump'
                   "</text></g>\n")
    out.extend(f'<text class="{cls}" x="{RIGHT + 6}" y="{at:.1f}">{label}</text>\n'
               for at, cls, label in _spread(side))
    out.append("</svg>\n")
    return "".join(out)


def _marks(marks: list[Mark], x: Callable[[float], float]) -> list[str]:
    """A tick per mark, its label in the first row above the plot with room for it
    (none when no row has: its tooltip and the table still name it)."""
    shorts = [_short(printable(m.label)) for m in marks]
    places = place_labels([x(m.t) - 2 for m in marks],
                          [len(short) * CHAR + 4 for short in shorts], MARK_ROWS, WIDTH - 4)
    out = []
    for n, (mark, short, place) in enumerate(zip(marks, shorts, places, strict=True), 1):
        at = x(mark.t)
        title = f"<title>mark {n}, {seconds(mark.t)}: {text(mark.label)}</title>"
        if place is None:
            out.append(f'<g class="mark">{title}<line x1="{at:.1f}" y1="{TOP}" '
                       f'x2="{at:.1f}" y2="{BOTTOM}"/></g>\n')
            continue
        row, start = place
        label_y = TOP - 8 - row * ROW  # the first row nearest the plot
        out.append(f'<g class="mark">{title}<line x1="{at:.1f}" y1="{label_y + 3}" '
                   f'x2="{at:.1f}" y2="{BOTTOM}"/><text x="{start + 2:.1f}" y="{label_y}">'
                   f"{text(short)}</text></g>\n")
    return out


def _short(label: str) -> str:
    return label if len(label) <= MAX_TICK_LABEL else label[: MAX_TICK_LABEL - 1] + "\u2026"


def _spread(labels: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """The right margin's labels moved apart so that none overlaps the one above."""
    placed: list[tuple[float, str, str]] = []
    for wanted, cls, label in sorted(labels):
        placed.append((max(wanted, placed[-1][0] + 13) if placed else wanted, cls, label))
    return placed


def _legend(timeline: Timeline) -> str:
    points = timeline.points
    samples = ("no samples" if not points else "one sample" if len(points) == 1
               else f"{len(points)} samples over {points[-1][0] - points[0][0]:.1f} s")
    items = ['<span class="key rss"></span> RSS', '<span class="key limit"></span> limit',
             *(f'<span class="key {name}"></span> {name}' for name in BANDS[:3]),
             '<span class="key mark"></span> mark', '<span class="key dump"></span> this dump']
    if timeline.drawn_siblings():
        items.append('<span class="key sibling"></span> other dumps of the session')
    note = ""
    if timeline.limit is not None and not timeline.limit_in_view():
        note = (f" The limit, {size(timeline.limit)}, is far above the highest RSS: the "
                "axis stops short of it.")
    return (f"<figcaption>{' &nbsp; '.join(items)}<br>RSS of the host, {samples}, up to "
            f"the dump.{note}</figcaption>\n")


# -- the words beside it ----------------------------------------------------------------------

def _figures(dump: Diagnostics, timeline: Timeline) -> str:
    m = dump.memory
    rows = [("RSS", size(m.rss)), ("limit", f"{size(m.heap_limit)} ({text(m.limit_source)})"),
            ("ratio", _ratio(m.ratio)), ("heap (RssAnon)", size(m.heap_used)),
            ("USS", size(m.uss)), ("VMS", size(m.vms)), ("swap", size(m.swap)),
            ("growth", f"{m.growth_bytes_per_second / (1 << 20):.2f} MiB/s"),
            ("time to the limit", "-" if m.seconds_to_limit is None
             else f"{m.seconds_to_limit:.0f} s"),
            ("system available", size(m.system_available))]
    if m.psi_some_avg10 is not None:
        rows.append(("memory pressure", f"{m.psi_some_avg10:.1f} % some, "
                     f"{0.0 if m.psi_full_avg10 is None else m.psi_full_avg10:.1f} % full"))
    usage = USAGE_OF.get(m.limit_source)
    note = (f"<p class=\"note\">The level measures {usage} against this limit, not RSS.</p>\n"
            if usage else "")
    risks = "".join(f"<li><b>{text(r.id)}</b> ({text(r.severity)}): {text(r.message)}</li>\n"
                    for r in dump.risk_details) or "<li>none</li>\n"
    return (f"<h2>Memory</h2>\n{_table(rows)}{note}<h2>Risks</h2>\n<ul class=\"risks\">\n"
            f"{risks}</ul>\n<h2>Suggestion</h2>\n<p>{text(dump.suggestion)}</p>\n"
            f"{_host(dump)}")


def _host(dump: Diagnostics) -> str:
    host = dump.host
    rows = [("pid", f"{host.pid} ({'alive' if host.alive else 'dead'})"),
            ("python", text(host.python or "-")),
            ("argv", " ".join(text(a) for a in host.argv) or "-"),
            ("last activity", text(dump.last_activity or "-"))]
    r = dump.responsiveness
    if r is not None:
        rows.append(("responsive", f"{text(r.state)}: {text(r.reason)}"))
    evidence = ""
    if host.exit is not None:
        e = host.exit
        rows.append(("exit", f"{text(e.kind)} {text(e.signal or '')} "
                     f"{'' if e.exit_code is None else f'exit code {e.exit_code}'} "
                     f"{text(e.exception or '')} ({text(e.confidence)})"))
        evidence = "".join(f"<li>{text(fact)}</li>\n" for fact in e.evidence)
        evidence = f"<h3>Evidence</h3>\n<ul>\n{evidence}</ul>\n" if evidence else ""
    return f"<h2>Host</h2>\n{_table(rows)}{evidence}"


def _tables(dump: Diagnostics, timeline: Timeline) -> str:
    marks = [(seconds(m.t), text(m.label)) for m in timeline.marks]
    stats = [(text(k), text(v)) for k, v in dump.session.items()]
    drawn = set(map(id, timeline.drawn_siblings()))
    others = [(f"{s.t:+.2f} s", f"{text(s.trigger)} ({text(s.level)}), {size(s.rss)}"
               f"{'' if id(s) in drawn else ', not drawn'}<br><code class=\"file\">"
               f"{text(s.name)}</code>") for s in timeline.siblings]
    parts = [f"<section><h2>Marks</h2>\n{_table(marks, numbered=True)}</section>\n"
             if marks else "<section><h2>Marks</h2>\n<p>none in this minute</p></section>\n",
             f"<section><h2>Session stats</h2>\n{_table(stats)}</section>\n" if stats else "",
             f"<section><h2>Other dumps of this session</h2>\n{_table(others)}</section>\n"
             if others else ""]
    return f"<div class=\"tables\">\n{''.join(parts)}</div>\n"


def _table(rows: list[tuple[str, str]], *, numbered: bool = False) -> str:
    """Rows of already escaped cells."""
    body = "".join(f"<tr>{f'<td>{n}</td>' if numbered else ''}<th>{key}</th><td>{value}</td>"
                   "</tr>\n" for n, (key, value) in enumerate(rows, 1))
    return f"<table>\n{body}</table>\n"


def _ratio(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else text(value)


def _level_class(level: str) -> str:
    return level if level in ("normal", "soft", "hard", "critical") else "normal"


def _capital(line: str) -> str:
    return line[:1].upper() + line[1:]


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
margin:0 auto;padding:18px 28px;max-width:1320px;background:#fafafa}
h1{font-size:21px;margin:0 0 2px}h2{font-size:16px;margin:16px 0 6px}h3{font-size:14px;
margin:10px 0 4px}code{font-size:90%}
.when{margin:0;color:#555}.verdict{font-size:18px;font-weight:600;margin:8px 0 12px}
.level{padding:1px 7px;border-radius:9px;font-weight:600}.level.normal{background:#e3f1e3}
.level.soft{background:#fff1b8}.level.hard{background:#ffd3a1}
.level.critical{background:#ffb0ab}
main{display:grid;grid-template-columns:minmax(0,2.4fr) minmax(300px,1fr);gap:24px;
align-items:start}
@media (max-width:1000px){main{grid-template-columns:1fr}}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figure svg{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#444;padding:4px 6px}
aside h2:first-child{margin-top:0}
table{border-collapse:collapse;font-size:14px}th,td{text-align:left;padding:2px 10px 2px 0;
vertical-align:top;overflow-wrap:anywhere}th{font-weight:500;color:#555;white-space:nowrap}
.tables{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:8px 24px;
margin-top:8px}
.tables table{display:block;max-height:360px;overflow:auto}
ul{margin:0;padding-left:20px}.note{font-size:13px;color:#555}
code.file{font-size:11px;color:#666}
footer{margin-top:18px;font-size:12px;color:#777}
.key{display:inline-block;width:14px;height:10px;vertical-align:middle;border-radius:2px}
.key.rss{background:#1f5fbf;height:3px}.key.limit{border-top:2px dashed #b00020;height:0}
.key.soft{background:#fff1b8}.key.hard{background:#ffd3a1}.key.critical{background:#ffb0ab}
.key.mark{width:2px;background:#6a4c93}.key.dump{width:10px;border-radius:5px;
background:#b00020}.key.sibling{width:8px;height:8px;border-radius:5px;border:2px solid #444}
svg .plot{fill:#fff;stroke:#999}svg .grid{stroke:#000;stroke-opacity:.08}
svg text{font:12px system-ui,sans-serif;fill:#333}svg .axis.title{fill:#555}
svg .band.soft{fill:#fff1b8}svg .band.hard{fill:#ffd3a1}svg .band.critical{fill:#ffb0ab}
svg .band.over{fill:#ffe1de}
svg .band-label{font-size:12px;fill:#7a5200}svg .band-label.critical{fill:#8c1c13}
svg .limit{stroke:#b00020;stroke-width:1.5;stroke-dasharray:6 4}
svg .limit-label{fill:#b00020;font-weight:600}
svg .area{fill:#1f5fbf;fill-opacity:.12}
svg .rss{fill:none;stroke:#1f5fbf;stroke-width:2;stroke-linejoin:round}
svg .sample{fill:#1f5fbf}svg .mark line{stroke:#6a4c93;stroke-opacity:.55;
stroke-dasharray:2 3}svg .mark text{font:11px ui-monospace,Menlo,Consolas,monospace;
fill:#4b2e83}svg .dump circle{fill:#b00020;stroke:#fff;stroke-width:2}
svg .dump text{font-weight:600;fill:#b00020}svg .sibling circle{fill:#fff;stroke:#444;
stroke-width:2}svg .sibling text{font-size:11px;fill:#444}svg .empty{fill:#777}
"""
