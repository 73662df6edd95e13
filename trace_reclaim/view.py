"""The live view: a top-like screen redrawn in place once per interval.

Plain ANSI escapes only (cursor home, clear to end of line/screen), so it
works over ssh and in tmux without curses or a terminfo entry.  When stdout
is not a terminal it falls back to one plain row per interval, the same
rows as before (pipes and logs stay greppable).  Every line fits in
``width`` (80) columns.  The screen is rendered from the correlator's live
state only, so what it shows is what the report will count.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TextIO

from trace_reclaim.episodes import zone_state
from trace_reclaim.report import (ellipsize, fmt_count, fmt_ns, interval_header, interval_line,
                                  render_text)
from trace_reclaim.tracer import Aggregator

if TYPE_CHECKING:
    from trace_reclaim.correlate import Correlator

__all__ = ["LiveView", "render_screen", "totals_line", "cgroup_line", "SHOWN_TOTALS", "WIDTH"]

WIDTH = 80
HOME_CLEAR = "\x1b[H\x1b[2J"
CLEAR_EOL = "\x1b[K"
HISTORY = 8


def _gib(kb: Optional[int]) -> str:
    if kb is None:
        return "-"
    return f"{kb / (1 << 20):.1f}G"


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "~"


# The report's totals the view shows (the "total" line and "lost" above it):
# the same keys, from the same code (Correlator.live_totals), so at the end
# the view and the report agree.
SHOWN_TOTALS = ("direct_reclaim_stalls", "direct_reclaim_ns", "kswapd_wakes",
                "compaction_runs_direct", "compaction_runs_kcompactd", "oom_kills",
                "lost_events")


def totals_line(t: Dict[str, Any]) -> str:
    """The view's "total" line from the report's totals; "-" for what no loaded tracer counts."""
    def n(key: str) -> Any:
        return t.get(key, "-")

    comp = "-"
    if "compaction_runs_direct" in t and "compaction_runs_kcompactd" in t:
        comp = t["compaction_runs_direct"] + t["compaction_runs_kcompactd"]
    return (f"total   {n('direct_reclaim_stalls')} stalls {fmt_ns(t.get('direct_reclaim_ns'))}, "
            f"{n('kswapd_wakes')} kswapd runs, {comp} compactions, "
            f"{n('oom_kills')} OOM kills")


def cgroup_line(mc: Dict[str, Any]) -> str:
    """The memcg row of an interval: memcg reclaim, then the top cgroups by stall time."""
    top = ", ".join(f"{ellipsize(c['name'], 14, middle=True)} "
                    f"{fmt_ns(c['stall_ns'] + c['memcg_ns'])}"
                    for c in (mc.get("top") or [])[:2])
    return (f"cgroups memcg {fmt_count(mc.get('memcg_reclaims', 0))} "
            f"{fmt_ns(mc.get('memcg_reclaim_ns', 0))}; top {top or '-'}")


def render_screen(state: Dict[str, Any], history: List[str], clock: str,
                  width: int = WIDTH) -> List[str]:
    """The lines of one screen (no escapes), each at most ``width`` columns."""
    row = state.get("row") or {}
    r = row.get("reclaim", {})
    t = state.get("totals") or {}
    out = [f"trace-reclaim  {clock}  up {fmt_ns(state.get('elapsed_ns', 0))}  "
           f"interval {row.get('interval', 0)}  lost {t.get('lost_events', '-')}  "
           "(Ctrl-C ends)"]
    m = state.get("meminfo") or {}
    psi = state.get("psi") or {}
    some, full = psi.get("some") or {}, psi.get("full") or {}
    out.append(f"memory  free {_gib(m.get('MemFree'))}  available "
               f"{_gib(m.get('MemAvailable'))}  cache {_gib(m.get('Cached'))}  "
               f"hugetlb {_gib(m.get('Hugetlb'))}")
    out.append(f"PSI     memory some avg10 {some.get('avg10', '-')}%  "
               f"full avg10 {full.get('avg10', '-')}%")
    zones = state.get("zones") or []
    zparts = []
    for z in zones:
        st = zone_state(z)
        zparts.append(f"N{z.get('node')}/{z.get('zone')} "
                      + ("ok" if st == "ok" else st.replace("below_", "<")
                         + f" {z.get('free')}/{z.get(st[6:], '')}"))
    out.append("zones   " + ("  ".join(zparts) if zparts else "-"))
    awake = state.get("kswapd_awake") or []
    awake_ns = sum((r.get("kswapd_awake_ns") or {}).values())
    out.append(f"kswapd  {'awake on node ' + ','.join(map(str, awake)) if awake else 'asleep'}"
               f"; this interval: {r.get('kswapd_wakes', 0)} runs, awake "
               f"{fmt_ns(awake_ns)}, {r.get('wakeup_requests', 0)} wake requests")
    out.append(f"direct  this interval: {r.get('stalls', 0)} stalls, "
               f"{fmt_ns(r.get('stall_ns', 0))} (max {fmt_ns(r.get('stall_max_ns', 0))}), "
               f"{r.get('pages', 0)} pages")
    s, v = row.get("slab"), row.get("vmalloc")
    if s is not None:
        net = ", ".join(f"{k} {n:+d}" for k, n in
                        [kv for kv in (s.get("top_net") or {}).items() if kv[1]][:2])
        out.append(f"slab    this interval: {s.get('shrink_calls', 0)} shrinks, "
                   f"{s.get('scanned', 0)} scanned, {s.get('freed', 0)} freed"
                   + (f"; net {net}" if net else ""))
    if v is not None:
        out.append(f"vmalloc this interval: {v.get('areas', 0)} areas, {v.get('huge_areas', 0)} "
                   f"huge ({v.get('huge_pages', 0)} x 2 MiB), {v.get('fallbacks', 0)} fell back")
    mc = row.get("memcg")
    if mc is not None:
        out.append(cgroup_line(mc))
    out.append(totals_line(t))
    eps = state.get("episodes") or {}
    out.append("")
    out.append(f"EPISODES ({eps.get('count', 0)} so far)")
    out.append(f"{'#':>5} {'NODE':>4} {'KIND':<7} {'STATE':<6} {'DUR':>8} {'RUNS':>5} "
               f"{'STALLS':>6} {'STALLED':>8} {'PAGES':>7} {'COMP':>5} {'OOM':>3}")
    now = state.get("now_ns", 0)
    for e in reversed(eps.get("recent") or []):
        end = e["end_ns"] if not e["open"] and e["end_ns"] else now
        out.append(f"{e['id']:>5} {e['node']:>4} {e['kind']:<7} "
                   f"{'open' if e['open'] else 'done':<6} "
                   f"{fmt_ns(max(0, end - e['start_ns'])):>8} {e['kswapd_wakes']:>5} "
                   f"{e['stalls']:>6} {fmt_ns(e['stall_ns']):>8} {e['pages']:>7} "
                   f"{e['compaction_runs']:>5} {e['oom_kills']:>3}")
    out.append("")
    out.append(interval_header())
    out += history[-HISTORY:]
    return [_fit(line, width) for line in out]


class LiveView:
    """What ``live`` prints: each interval, then the report.

    On a terminal the screen is redrawn in place each interval; elsewhere
    one plain row per interval; with ``json_lines`` (``live -j``) one JSON
    line per interval, the report's ``intervals`` entry itself.  Then the
    report, as text or as one JSON line.
    """

    def __init__(self, out: TextIO, tty: Optional[bool] = None, width: int = WIDTH,
                 clock: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
                 json_lines: bool = False) -> None:
        self.out = out
        if tty is None:
            tty = out.isatty()
        self.tty = tty
        self.width = width
        self.clock = clock
        self.json_lines = json_lines
        self.history: List[str] = []
        self.frames = 0

    def start(self) -> None:
        if not self.tty and not self.json_lines:
            print(interval_header(), file=self.out, flush=True)

    def interval(self, row: Dict[str, Any], correlator: Correlator) -> None:
        """Show the row the correlator just closed, with its live state."""
        if self.json_lines:
            print(json.dumps({"type": "interval", **row}), file=self.out, flush=True)
        else:
            self.update(row, correlator.live_state())

    def update(self, row: Dict[str, Any], state: Dict[str, Any]) -> None:
        clock = self.clock()
        line = interval_line(row, clock)
        if not self.tty:
            print(line, file=self.out, flush=True)
            return
        self.history.append(line)
        del self.history[:-HISTORY]
        lines = render_screen({**state, "row": row}, self.history, clock, self.width)
        self.out.write(HOME_CLEAR + "".join(ln + CLEAR_EOL + "\n" for ln in lines))
        self.out.flush()
        self.frames += 1

    def finish(self) -> None:
        """Leave the last frame on screen; the report follows below it."""
        if self.tty:
            self.out.write("\n")
            self.out.flush()

    def end(self, doc: Dict[str, Any], aggs: Dict[str, Aggregator]) -> None:
        """Print the report after the last interval."""
        if self.json_lines:
            print(json.dumps({"type": "report", "report": doc}), file=self.out)
            return
        self.finish()
        print("", file=self.out)
        self.out.write(render_text(doc, aggs))
