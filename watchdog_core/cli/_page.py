"""``show FILE --html OUT``: a dump as one self-contained page.

An inline SVG of the timeline (``_svg``) beside the verdict (and, on a descendant-died
dump, which process of the tree died and how), the memory figures and the risks; under
it the stacks the dump holds or names, the marks, the stats, the files beside the dump
and the other dumps of its session. No network, no script: the page says so in its
Content-Security-Policy too. Every string of the dump is the host's (or whoever wrote
the file): each goes through ``text()``, printable and HTML-escaped.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ._svg import BANDS, svg, text
from ._timeline import USAGE_OF, Timeline, descendant_verdict, seconds, size, verdict

if TYPE_CHECKING:
    from .._diagnostics import Diagnostics

__all__ = ["page", "text"]

NUMBERED = ' class="numbered"'  # a table whose first column counts its rows
# faulthandler's crash report names the thread that crashed so.
_CURRENT = re.compile(r"^Current thread (0x[0-9a-fA-F]+)", re.MULTILINE)


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
        f"</p>\n<p class=\"verdict\">{text(_capital(verdict(dump)))}</p>\n",
        _descendant(dump), "</header>\n",
        "<main>\n<div>\n<figure>\n", svg(dump, timeline),
        _legend(timeline, dump.memory.measure), "</figure>\n",
        _stacks(dump, timeline.path), _tables(dump, timeline), "</div>\n<aside>\n",
        _figures(dump, timeline), "</aside>\n</main>\n",
        "<footer>Written by <code>watchdog-core show --html</code>. Bands: thresholds of ",
        f"{text(timeline.thresholds_from)}.</footer>\n</body>\n</html>\n",
    ])


# -- the stacks and the files beside the dump -------------------------------------------------

def _stacks(dump: Diagnostics, path: str | None) -> str:
    """The host's stacks as the dump has them: the uncaught exception's traceback, the
    crashed thread's, the main thread's from the stacks file beside the dump (a hang's,
    or the first critical dump's); most recent call last, as ``show`` prints them."""
    from .show import _tail

    parts = []
    e = dump.host.exit
    if e is not None and e.frames:
        frames = [f'File "{f.file}", line {"?" if f.line is None else f.line}, in '
                  f"{f.function}" for f in e.frames]
        parts.append(_section(f"Traceback{f' of {e.exception}' if e.exception else ''}",
                              _pre(_tail(frames, e.frames_omitted))))
    if dump.crash_traceback:
        parts.append(_crash(dump.crash_traceback))
    if dump.responsiveness is not None or "stacks" in dump.extras:
        parts.append(_main_stack(dump, path))
    return "".join(parts)


def _crash(report: str) -> str:
    from .show import _same_thread, _tail, parse_stacks

    lines = report.splitlines()
    current = _CURRENT.search(report)
    threads = parse_stacks(report)
    chosen = next((t for t in threads if current and _same_thread(t[0], current[1])),
                  None if current else next(iter(threads), None))
    body = f"<p>{text(lines[0].strip() if lines else '-')}</p>\n"
    if chosen is not None:
        body += _pre(_tail(chosen[1][::-1]))
    return _section("Crash", body)


def _main_stack(dump: Diagnostics, path: str | None) -> str:
    """The main thread's block of the stacks file, as ``show`` chooses it; or why there
    is none."""
    from .show import main_stack

    found = main_stack(dump, path)
    if found.problem is not None:
        return _section("Stacks", f"<p>{text(found.problem[:1].upper() + found.problem[1:])}"
                        "</p>\n")
    if found.is_main:
        title = f"Stack of the main thread, {text(found.thread)}"
    else:
        title = f"Stack of thread {text(found.thread or '-')}, the first in the file"
    file = f"<code class=\"file\">{text(found.path)}</code>"
    count = f"{found.threads} thread{'s' if found.threads != 1 else ''}"
    return _section(title, f"<p class=\"note\">Most recent call last. Every thread's stack "
                    f"({count}): {file}</p>\n{_pre(found.frames)}")


def _files(dump: Diagnostics, path: str | None) -> str:
    """The extras written beside the dump, by name, and why any asked for is missing."""
    from .show import beside

    rows = [(text(key), f"<code class=\"file\">{text(name)}</code>")
            for key, name in dump.extras.items()]
    rows += [(text(key), f"missing: {text(why)}") for key, why in dump.extras_missing.items()]
    if not rows:
        return ""
    where = "" if path is None else (
        f"<p class=\"note\">In <code class=\"file\">{text(beside(path, ''))}</code></p>\n")
    return f"<section><h2>Files beside the dump</h2>\n{_table(rows)}{where}</section>\n"


def _section(title: str, body: str) -> str:
    """``title`` already escaped, ``body`` already HTML."""
    return f"<section class=\"stack\"><h2>{title}</h2>\n{body}</section>\n"


def _pre(lines: list[str]) -> str:
    return "<pre>" + "".join(f"{text(line)}\n" for line in lines) + "</pre>\n"


# -- the words beside it ----------------------------------------------------------------------

def _descendant(dump: Diagnostics) -> str:
    """A descendant-died dump's news, beside the verdict: which process and how."""
    d = dump.descendant
    if d is None:
        return ""
    facts = "".join(f"<li>{text(fact)}</li>\n" for fact in d.exit.evidence)
    return (f"<p class=\"verdict descendant\">{text(_capital(descendant_verdict(d)))}</p>\n"
            + (f"<ul class=\"evidence\">\n{facts}</ul>\n" if facts else ""))


def _legend(timeline: Timeline, measure: str | None = None) -> str:
    items = ['<span class="key rss"></span> RSS', '<span class="key limit"></span> limit',
             *(f'<span class="key {name}"></span> {name}' for name in BANDS[:3]),
             '<span class="key mark"></span> mark', '<span class="key dump"></span> this dump']
    if timeline.drawn_siblings():
        items.append('<span class="key sibling"></span> other dumps of the session')
    notes = []
    drawn, marks = len(timeline.drawn_marks()), len(timeline.marks)
    if drawn < marks:
        notes.append(f"{marks} marks: {drawn} of them drawn, evenly spread; the table "
                     "has them all.")
    if timeline.left_out:
        notes.append(f"{_count(timeline.left_out, 'sample')} of absurd times (more than a "
                     "week from the dump) left out.")
    if timeline.limit is not None and not timeline.limit_in_view():
        notes.append(f"The limit, {size(timeline.limit)}, is far above the highest RSS: "
                     "the axis stops short of it.")
    what = MEASURES.get(measure or "", "RSS of the host")
    return (f"<figcaption>{' &nbsp; '.join(items)}<br>{what}, {timeline.samples()}. "
            f"{' '.join(notes)}</figcaption>\n")


# What the line is, by the dump's memory.measure (docs/diagnostics.md).
MEASURES = {"tree-rss": "RSS of the host and its descendants, summed",
            "cgroup": "The tree's memory: the working set of its own cgroup"}


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
             if others else "", _files(dump, timeline.path)]
    return f"<div class=\"tables\">\n{''.join(parts)}</div>\n"


def _table(rows: list[tuple[str, str]], *, numbered: bool = False) -> str:
    """Rows of already escaped cells."""
    body = "".join(f"<tr>{f'<td>{n}</td>' if numbered else ''}<th>{key}</th><td>{value}</td>"
                   "</tr>\n" for n, (key, value) in enumerate(rows, 1))
    return f"<table{NUMBERED if numbered else ''}>\n{body}</table>\n"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


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
main>*{min-width:0}header,aside,section,figcaption,footer{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:14px}th,td{text-align:left;padding:2px 10px 2px 0;
vertical-align:top;overflow-wrap:anywhere}th{font-weight:500;color:#555;min-width:7.5em}
table.numbered th{min-width:0}
.verdict.descendant{color:#8c1c13;margin-top:-6px}
ul.evidence{font-size:13px;color:#444;margin:-8px 0 12px}
section.stack pre{font:12px/1.45 ui-monospace,Menlo,Consolas,monospace;background:#fff;
border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:0;white-space:pre-wrap;
overflow-wrap:anywhere;max-height:420px;overflow:auto}
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
