"""Trace replay: a CSV trace's arrival times and token counts as inference events.

The latency, errors and cost of each request are modelled by the same
:class:`~pipeline.dev.simulate.TrafficModel` as synthetic traffic, from a
:class:`~pipeline.dev.simulate.ModelProfile` derived from the trace's name.
"""

from __future__ import annotations

import calendar
import csv
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.dev.simulate import (
    MAX_TOKENS,
    Incident,
    ModelProfile,
    Record,
    TrafficModel,
    check_start,
)

__all__ = ["replay", "replay_profile"]

_TS_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z?")


def _parse_ns(text: str) -> int:
    """``YYYY-MM-DD HH:MM:SS[.fffffffff]`` (UTC) to integer Unix nanoseconds, exactly."""
    match = _TS_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"timestamp {text!r} is not YYYY-MM-DD HH:MM:SS[.fraction]")
    y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError(f"timestamp {text!r} is out of range")
    fraction = (match.group(7) or "").ljust(9, "0")
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + int(fraction)


def _read_trace(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``time, input tokens, output tokens`` rows (header optional, any line ending)."""
    times: list[int] = []
    tin: list[int] = []
    tout: list[int] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if limit is not None and len(times) >= limit:
                break
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if lineno == 1 and row[0].strip()[:1].isalpha():
                continue  # header
            try:
                if len(row) != 3:
                    raise ValueError(f"expected 3 columns (time, input tokens, output tokens), "
                                     f"got {len(row)}")
                ns = _parse_ns(row[0])
                n_in, n_out = int(row[1]), int(row[2])
                if not (0 <= n_in <= MAX_TOKENS and 0 <= n_out <= MAX_TOKENS):
                    raise ValueError(f"token counts must be in [0, {MAX_TOKENS}]")
            except ValueError as exc:
                line = ",".join(row)
                raise ValueError(f"{path}:{lineno}: malformed row {line!r}: {exc}") from None
            times.append(ns)
            tin.append(n_in)
            tout.append(n_out)
    if not times:
        raise ValueError(f"{path}: no data rows")
    return np.array(times, dtype=np.int64), np.array(tin), np.array(tout)


def _trace_name(path: Path) -> str:
    """``azure_llm_inference_conv_2023.csv`` → ``azure-conv``; otherwise a slug of the stem."""
    stem = path.stem.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-") or "trace"
    if "azure" in stem:
        core = re.sub(r"azure[-_]?llm[-_]?inference(?:[-_]?trace)?", "", stem)
        core = re.sub(r"[-_]?20\d\d$", "", core)
        core = re.sub(r"[^a-z0-9]+", "-", core).strip("-")
        return f"azure-{core}" if core else "azure"
    return slug[:128]


def replay_profile(name: str) -> ModelProfile:
    """A profile for replayed LLM traffic: a code model when the name says so, else chat."""
    code = "code" in name
    return ModelProfile(
        name, operation="text_completion" if code else "chat", hosts=4,
        max_input=16_384, max_output=8_192, chars_per_token=3.3 if code else 4.0,
        queue_ms=15.0, base_ms=40.0, prefill_ms_per_token=0.15,
        tpot_ms=30.0, tpot_context_tokens=16_000.0, latency_sigma=0.2,
        timeout_ms=120_000.0, error_rate=0.003, long_context_error=0.05,
        cache_rate=0.4 if code else 0.3,
        price_in_per_mtok=2.5, price_out_per_mtok=10.0,
        app_features=("ide_inline", "ide_chat") if code else ("assistant", "search"),
    )


def replay(
    path: str | os.PathLike[str],
    seed: int,
    start: float,
    *,
    model: str | None = None,
    profile: ModelProfile | None = None,
    limit: int | None = None,
    incidents: Iterable[Incident | str] = (),
    resources: bool = False,
) -> Iterator[tuple[float, Record]]:
    """Replay a CSV trace of ``time, input tokens, output tokens`` as inference events.

    Offsets are the trace's own arrival times minus the first one (rows are put in time
    order), rebased onto ``start``; token counts come from the file; latency (queue +
    prefill ∝ input + decode ∝ output, with noise), TTFT, TPOT, errors (likelier with
    longer context) and cost are modelled from them by ``profile`` (default:
    :func:`replay_profile` of ``model``, itself derived from the file name). The whole
    file (or its first ``limit`` rows) is read and checked now: a malformed row raises
    ValueError naming the file and line.
    """
    trace = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    check_start(start)
    name = model or (profile.name if profile else _trace_name(trace))
    prof = replace(profile, name=name, share=1.0) if profile else replay_profile(name)
    ns, tin, tout = _read_trace(trace, limit)
    order = np.argsort(ns, kind="stable")
    ns, tin, tout = ns[order], tin[order], tout[order]
    offsets = (ns - ns[0]) / 1e9
    traffic = TrafficModel((prof,), incidents, seed=seed, id_prefix=f"{name}-{seed}")
    span = float(offsets[-1])
    nominal = [len(offsets) / max(span, 1.0) / prof.hosts]
    return _replay(traffic, start, offsets, tin, tout, resources, nominal)


def _replay(
    traffic: TrafficModel,
    start: float,
    offsets: np.ndarray,
    tin: np.ndarray,
    tout: np.ndarray,
    resources: bool,
    nominal: list[float],
) -> Iterator[tuple[float, Record]]:
    rng, res_rng = traffic._rngs()
    span = float(offsets[-1])
    width = 60
    t0 = 0
    lo = 0
    while lo < len(offsets):
        t1 = t0 + width
        hi = int(np.searchsorted(offsets, t1, "left"))
        end = float(t1) if hi < len(offsets) else span  # no sample for a last partial second
        which = np.zeros(hi - lo, dtype=np.int64)
        yield from traffic._window(rng, res_rng, start, t0, end, offsets[lo:hi], which, tin[lo:hi],
                                   tout[lo:hi], lo, resources, nominal)
        lo = hi
        t0 = t1
