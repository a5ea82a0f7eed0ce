"""``inferwatch top``: the Overview as a live table in the terminal, for a shell over SSH.

Every ``--every`` seconds it runs the Overview SQL (:mod:`pipeline.views.overview`)
through the read-only query path (a ClickHouse server, the worker that owns the embedded
store, or the store itself when no worker runs) and redraws one row per series: req/s,
p50 / p99 latency, p99 time to first token, error rate, tokens/s, $/h, SLO compliance,
drift, anomaly and change-point flags and firing alerts. ``q`` or Ctrl-C quits and gives
the terminal back as it was (alternate screen left, cursor shown, modes restored).

Plain ANSI escapes and ``termios``, no curses: any terminal an SSH session offers will do.
A failed query (the worker restarting) is shown in the header and retried at the next
refresh; the last table stays on screen. With ``--once``, or when stdout is not a
terminal, it prints one table with no escapes and exits.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import click

from pipeline.cli import _settings, cli
from pipeline.views.overview import DEFAULT_LOOKBACK_SECONDS, OVERVIEW_COLUMNS, Column

__all__ = ["cell", "render", "top"]

# what the table shows, in order (the label columns fold into "series")
# (firing alerts before the long drift lists, so a narrow terminal cuts those instead)
_SHOWN = ("requests_per_s", "p50_ms", "p99_ms", "ttft_p99_ms", "error_rate", "tokens_per_s",
          "cost_per_hour_usd", "slo_compliance", "firing", "anomaly", "drifted",
          "change_points")
_COLUMNS = {c.name: c for c in OVERVIEW_COLUMNS}
_RED, _BOLD, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"
_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, hide the cursor
_LEAVE = "\x1b[?25h\x1b[?1049l"  # show the cursor, back to the main screen


def cell(column: Column, value: Any) -> str:
    """One value as the table shows it: NULL as ``-``, fractions as percentages.

    >>> cell(_COLUMNS["error_rate"], 0.01234), cell(_COLUMNS["p99_ms"], 1234.56)
    ('1.23%', '1234.6')
    >>> cell(_COLUMNS["ttft_p99_ms"], None), cell(_COLUMNS["firing"], ["A", "B"])
    ('-', 'A,B')
    """
    if value is None:
        return "-"
    if column.kind == "percent":
        return f"{value * 100:.{column.digits}f}%"
    if column.kind == "list":
        return ",".join(value) if value else ""
    if column.kind == "flag":
        return "yes" if value else ""
    if column.kind == "number":
        return f"{value:.{column.digits}f}"
    return str(value)


def _series(key: str) -> str:
    """``model=a|model_version=1|operation=chat`` → ``a 1 chat``."""
    return " ".join(part.partition("=")[2] or part for part in key.split("|"))


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    except ValueError:
        return None


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int,
           height: int | None = None, title: str = "", color: bool = False) -> list[str]:
    """The screen as lines: a header, column titles, one line per series, fitted to
    ``width`` (the last column is cut) and ``height`` (rows beyond it are counted).

    >>> lines = render(["series_key", "window_end", "p99_ms", "firing"],
    ...                [["model=a", "2026-01-01T00:00:10", 12.0, ["Slow"]]], width=60)
    >>> lines[2].split()
    ['series', 'age', 'p99', 'firing', 'alerts']
    >>> lines[3].split()
    ['a', '0s', '12.0', 'Slow']
    """
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    ends = [t for t in (_time(r.get("window_end")) for r in records) if t is not None]
    as_of = max(ends) if ends else None
    shown = [name for name in _SHOWN if name in columns]
    titles = ["series", "age", *(_COLUMNS[n].title for n in shown)]
    body: list[list[str]] = []
    alarms: list[bool] = []
    for r in records:
        end = _time(r.get("window_end"))
        age = f"{(as_of - end).total_seconds():.0f}s" if end and as_of else "-"
        cells = {n: cell(_COLUMNS[n], r[n]) for n in shown}
        if r.get("anomalous") and "anomaly" in cells:
            cells["anomaly"] += "!"  # reached its threshold (also red when in colour)
        body.append([_series(str(r.get("series_key", ""))), age, *cells.values()])
        alarms.append(bool(r.get("firing")) or bool(r.get("anomalous")))
    widths = [max([len(t), *(len(b[i]) for b in body)]) for i, t in enumerate(titles)]
    numeric = [False, True, *(_COLUMNS[n].kind in ("number", "percent") for n in shown)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w)
                 for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()[:width]

    stamp = as_of.strftime("%H:%M:%S UTC") if as_of else "no window yet"
    head = [f"{title} {len(records)} series, newest window {stamp}"[:width],
            "ages: time from the series' latest window to the newest; flags over the "
            "lookback"[:width], line(titles)]
    if color:
        head[2] = _BOLD + head[2] + _RESET
    room = len(body) if height is None else max(0, height - len(head) - 1)
    out = head + [(_RED + line(b) + _RESET) if color and alarm else line(b)
                  for b, alarm in zip(body[:room], alarms[:room], strict=True)]
    if room < len(body):
        out.append(f"… {len(body) - room} more (use --limit, --filter or a taller terminal)"
                   [:width])
    return out


def _filters(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not LABEL=VALUE", param_hint="--filter")
        out[name.strip()] = value.strip()
    return out


class _Terminal:
    """Alternate screen and cbreak mode on entry (keys unbuffered, no echo; Ctrl-C still
    a signal), the saved modes restored on exit whatever happened."""

    def __init__(self, out: TextIO, fd: int) -> None:
        self.out, self.fd = out, fd
        self.saved: Any = None

    def __enter__(self) -> _Terminal:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.out.write(_ENTER)
        self.out.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        self.out.write(_LEAVE)
        self.out.flush()
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def draw(self, lines: Sequence[str]) -> None:
        # home, each line then erase its rest, erase below: no flicker of a full clear
        self.out.write("\x1b[H" + "".join(f"{t}\x1b[K\r\n" for t in lines) + "\x1b[J")
        self.out.flush()

    def quit_pressed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a key; True if it was ``q``."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        keys = os.read(self.fd, 64)
        return not keys or b"q" in keys.lower()  # no bytes: the terminal went away


def _live(fetch: Callable[[], tuple[list[str], list[list[Any]]]], every: float,
          title: str) -> None:
    out = sys.stdout
    columns: list[str] = []
    rows: list[list[Any]] = []
    with _Terminal(out, sys.stdin.fileno()) as term:
        try:
            while True:
                started = time.monotonic()
                status = f"every {every:g}s, q quits |"
                try:
                    columns, rows = fetch()
                except Exception as exc:  # the worker restarting: say so, keep trying
                    status = f"query failed ({str(exc).splitlines()[0][:120]}) |"
                size = shutil.get_terminal_size()
                lines = render(columns or ["series_key"], rows if columns else [],
                               width=size.columns, height=size.lines,
                               title=f"{title} | {status}", color=True)
                term.draw(lines)
                if term.quit_pressed(every - (time.monotonic() - started)):
                    return
        except KeyboardInterrupt:
            return


@cli.command()
@click.option("--every", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--sort", default="series_key", show_default=True,
              type=click.Choice([c.name for c in OVERVIEW_COLUMNS]),
              help="Column to sort by: numbers and flags descending (worst first), "
                   "text ascending.")
@click.option("--filter", "filters", multiple=True, metavar="LABEL=VALUE",
              help="Only series with this label value (repeatable, all must match).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many series.")
@click.option("--lookback", type=click.IntRange(min=1), default=DEFAULT_LOOKBACK_SECONDS,
              show_default=True,
              help="Seconds before the newest window: series shown and flags raised.")
@click.option("--once", is_flag=True, help="Print the table once and exit (no escapes).")
@click.pass_context
def top(ctx: click.Context, every: float, sort: str, filters: tuple[str, ...],
        limit: int | None, lookback: int, once: bool) -> None:
    """A live table of every series: traffic, latency, errors, tokens, cost, SLO,
    drift / anomaly / change-point flags and firing alerts. q or Ctrl-C quits.

    Figures are the series' latest closed window; see docs/top.md.
    """
    from pipeline.sinks.clickhouse.owner import StoreBusyError
    from pipeline.sinks.clickhouse.query import QueryError, run_query
    from pipeline.views.overview import overview_sql

    settings = _settings(ctx)
    sql = overview_sql(lookback_seconds=lookback, filters=_filters(filters), sort=sort,
                       limit=limit)

    def fetch() -> tuple[list[str], list[list[Any]]]:
        result = run_query(settings, sql, timeout=max(10.0, every))
        return result.columns, result.rows

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if once or not interactive:
        try:
            columns, rows = fetch()
        except (QueryError, StoreBusyError) as exc:
            raise click.ClickException(str(exc)) from exc
        width = shutil.get_terminal_size((200, 24)).columns if interactive else 10_000
        click.echo("\n".join(render(columns or ["series_key"], rows if columns else [],
                                    width=width, title="inferwatch top |")))
        return
    _live(fetch, every, "inferwatch top")
