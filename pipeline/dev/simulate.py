"""Seeded inference traffic: synthetic streams and trace replay, with injected incidents.

Pure generation, no Kafka and no sleeping: both modes yield ``(offset_seconds, record)``
pairs in event-time order, where a record is an :class:`InferenceEvent` or a
:class:`ResourceSample` whose ``timestamp`` is ``start + offset``. Pacing (sleeping to
the offsets, at some speed factor) is the caller's business.

* :func:`synthetic` draws Poisson arrivals at ``rate`` events/s over several model
  profiles (:mod:`pipeline.dev.model_profiles`: traffic shares, versions, a canary),
  with heavy-tailed tokens and latency (lognormal body × occasional Pareto tail), errors
  by type, prompt caching, cost, quality signals, drift features, and one resource
  sample per host per second whose utilisations follow the load.
* :func:`pipeline.dev.replay.replay` keeps the arrival times and token counts of a CSV
  trace (the Azure LLM inference traces in ``data/``) and models latency, errors and
  cost from them.
* :class:`Incident` (``"latency_spike@20+10:model=gpt-chat:factor=5"``) changes the
  traffic inside a time window, in both modes, so detectors have something to find.

Everything is drawn from ``numpy.random.Generator(PCG64(seed))`` in vectorised chunks:
the same seed and arguments give the same records and the same ``event_id`` values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.dev.incidents import Incident, parse_incidents
from pipeline.dev.model_profiles import DEFAULT_MODELS, ModelProfile
from schemas.event import InferenceEvent, ResourceSample

__all__ = [
    "DEFAULT_MODELS",
    "ModelProfile",
    "Record",
    "TrafficModel",
    "synthetic",
]

Record = InferenceEvent | ResourceSample
MAX_TOKENS = 100_000_000
_DAY_MS = 86_400_000.0
_WINDOW_EVENTS = 8192  # events per vectorised chunk, roughly
_MAX_WINDOW_S = 600

# Categorical vocabularies: (values, weights). Drift reverses the weights.
_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
_TENANT_W = tuple(1.0 / (k + 1) ** 1.1 for k in range(len(_TENANTS)))
_REGIONS = (("eastus", "westeurope", "swedencentral", "japaneast"), (0.45, 0.3, 0.1, 0.15))
_TEXT_LANGS = (
    ("en", "de", "fr", "es", "pt", "ja", "zh"), (0.55, 0.1, 0.08, 0.1, 0.07, 0.06, 0.04)
)
_CODE_LANGS = (
    ("python", "typescript", "java", "go", "rust", "cpp"), (0.4, 0.25, 0.15, 0.1, 0.05, 0.05)
)
_CLIENTS = (("web", "ios", "android", "api", "slack"), (0.45, 0.2, 0.15, 0.15, 0.05))
_TEMPERATURES = (0.0, 0.2, 0.7, 1.0)
_TEMP_W = {"chat": (0.1, 0.2, 0.55, 0.15), "text_completion": (0.6, 0.3, 0.1, 0.0)}

# Error types, with their share among errors in normal times and during an error burst.
_ERROR_TYPES = ("timeout", "rate_limited", "server_error", "content_filter")
_ERROR_W = (0.25, 0.3, 0.3, 0.15)
_BURST_ERROR_W = (0.2, 0.3, 0.5, 0.0)
_TIMEOUT, _RATE_LIMITED, _SERVER_ERROR, _CONTENT_FILTER = range(4)


@dataclass(slots=True)
class _Window:
    """Per-second load of one profile in a window, for its resource samples."""

    counts: np.ndarray
    tokens: np.ndarray
    spike: np.ndarray  # latency-spike factor per second (1: none)


def _categorical(
    rng: np.random.Generator, vocab: tuple[tuple[str, ...], tuple[float, ...]], drift: np.ndarray
) -> list[str]:
    """Draw one value per row; drifted rows use the reversed weights."""
    values, weights = vocab
    w = np.asarray(weights, dtype=float)
    cum = np.cumsum(w / w.sum())
    cum_drift = np.cumsum(w[::-1] / w.sum())
    u = rng.random(len(drift))
    idx = np.where(drift, np.searchsorted(cum_drift, u, "right"), np.searchsorted(cum, u, "right"))
    table = np.asarray(values, dtype=object)
    return table[np.minimum(idx, len(values) - 1)].tolist()


def _hex_ids(rng: np.random.Generator, n: int, words: int) -> list[str]:
    draws = rng.integers(0, 2**63, size=(n, words), dtype=np.int64, endpoint=False).tolist()
    return ["".join(f"{w:016x}" for w in row) for row in draws]


class TrafficModel:
    """Models plus incidents plus a seed: the source of every simulated record.

    Each call of :meth:`stream` starts from a fresh ``Generator(PCG64(seed))``, so a
    model can be streamed again with the same result.
    """

    def __init__(
        self,
        models: Sequence[ModelProfile] = DEFAULT_MODELS,
        incidents: Iterable[Incident | str] = (),
        *,
        seed: int = 0,
        environment: str = "prod",
        id_prefix: str | None = None,
    ) -> None:
        self.models = tuple(models)
        if not self.models:
            raise ValueError("at least one model profile is needed")
        keys = [(m.name, m.version) for m in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError(f"model (name, version) pairs must be unique, got {keys}")
        self.incidents = parse_incidents(incidents)
        names = {m.name for m in self.models}
        for inc in self.incidents:
            if inc.model is not None and inc.model not in names:
                raise ValueError(
                    f"incident {inc} names model {inc.model!r}; models: {sorted(names)}"
                )
        self.seed = int(seed)
        self.environment = environment
        self.id_prefix = f"sim-{self.seed}" if id_prefix is None else id_prefix
        shares = np.array([m.share for m in self.models], dtype=float)
        self._shares = shares / shares.sum()

    def _rngs(self) -> tuple[np.random.Generator, np.random.Generator]:
        """Event and resource streams: independent, so neither perturbs the other."""
        bits = np.random.PCG64(self.seed)
        return np.random.Generator(bits), np.random.Generator(bits.jumped())

    def stream(
        self, rate: float, duration: float | None, start: float, *, resources: bool = True
    ) -> Iterator[tuple[float, Record]]:
        """Poisson arrivals at ``rate``/s for ``duration`` s (None: forever), time-ordered."""
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        if duration is not None and not (duration >= 0):
            raise ValueError(f"duration must be >= 0 seconds or None, got {duration}")
        check_start(start)
        nominal = [rate * s / m.hosts for s, m in zip(self._shares, self.models, strict=True)]
        return self._stream(rate, duration, start, resources, nominal)

    def _stream(
        self,
        rate: float,
        duration: float | None,
        start: float,
        resources: bool,
        nominal: list[float],
    ) -> Iterator[tuple[float, Record]]:
        rng, res_rng = self._rngs()
        width = int(min(_MAX_WINDOW_S, max(1, round(_WINDOW_EVENTS / rate))))
        counter = 0
        t0 = 0
        while duration is None or t0 < duration:
            t1 = t0 + width if duration is None else min(t0 + width, duration)
            n = int(rng.poisson(rate * (t1 - t0)))
            offsets = np.sort(rng.uniform(t0, t1, n))
            which = rng.choice(len(self.models), size=n, p=self._shares)
            yield from self._window(rng, res_rng, start, t0, t1, offsets, which, None, None,
                                    counter, resources, nominal)
            counter += n
            t0 += width

    def _window(
        self,
        rng: np.random.Generator,
        res_rng: np.random.Generator,
        start: float,
        t0: int,
        t1: float,
        offsets: np.ndarray,
        which: np.ndarray,
        tin: np.ndarray | None,
        tout: np.ndarray | None,
        counter: int,
        resources: bool,
        nominal: list[float],
    ) -> Iterator[tuple[float, Record]]:
        """Build the events of one window (``t0`` integral) and merge in resource samples."""
        events: list[InferenceEvent | None] = [None] * len(offsets)
        seconds = max(0, math.floor(t1) - t0)  # complete seconds: one sample at each end
        loads: list[_Window] = []
        for p, profile in enumerate(self.models):
            sel = np.flatnonzero(which == p)
            built, tokens = self._events(
                rng, profile, start, offsets[sel], sel + counter,
                None if tin is None else tin[sel], None if tout is None else tout[sel],
            )
            for i, event in zip(sel.tolist(), built, strict=True):
                events[i] = event
            if resources:
                bucket = np.floor(offsets[sel]).astype(np.int64) - t0
                keep = bucket < seconds
                spike = np.ones(seconds)
                mids = t0 + np.arange(seconds) + 0.5
                for inc in self.incidents:
                    if inc.kind == "latency_spike" and inc.model in (None, profile.name):
                        spike[inc.window(mids)] *= inc.magnitude
                loads.append(_Window(
                    np.bincount(bucket[keep], minlength=seconds),
                    np.bincount(bucket[keep], weights=tokens[keep], minlength=seconds),
                    spike,
                ))
        samples = self._samples(res_rng, start, t0, seconds, loads, nominal) if resources else []
        offs = offsets.tolist()
        i = 0
        for k, batch in samples:
            while i < len(offs) and offs[i] < k:
                yield offs[i], events[i]  # type: ignore[misc]
                i += 1
            for sample in batch:
                yield float(k), sample
        while i < len(offs):
            yield offs[i], events[i]  # type: ignore[misc]
            i += 1

    def _events(
        self,
        rng: np.random.Generator,
        prof: ModelProfile,
        start: float,
        off: np.ndarray,
        numbers: np.ndarray,
        tin: np.ndarray | None,
        tout: np.ndarray | None,
    ) -> tuple[list[InferenceEvent], np.ndarray]:
        """Draw and build one profile's events; also return each event's token total."""
        m = len(off)
        gen = prof.generative
        # Incident effects, per event.
        lat_mult = np.ones(m)
        burst_p = np.zeros(m)
        drift_mult = np.ones(m)
        out_mult = np.ones(m)
        for inc in self.incidents:
            if inc.model not in (None, prof.name):
                continue
            w = inc.window(off)
            if inc.kind == "latency_spike":
                lat_mult[w] *= inc.magnitude
            elif inc.kind == "error_burst":
                burst_p[w] = np.maximum(burst_p[w], inc.magnitude)
            elif inc.kind == "feature_drift":
                drift_mult[w] *= inc.magnitude
            else:
                out_mult[w] *= inc.magnitude
        burst = burst_p > 0
        drift = drift_mult != 1.0

        # Tokens: drawn (synthetic) or given (replay), then transformed by incidents.
        if tin is None:
            drawn = rng.lognormal(math.log(prof.input_median), prof.input_sigma, m)
            tin = np.clip(np.rint(drawn), 1, prof.max_input)
        tin = np.minimum(np.rint(tin * drift_mult), MAX_TOKENS).astype(np.int64)
        length = np.zeros(m, dtype=bool)
        if gen:
            if tout is None:
                drawn = np.rint(rng.lognormal(math.log(prof.output_median), prof.output_sigma, m))
                tout = np.clip(drawn, 1, prof.max_output)
            length = tout >= prof.max_output
            tout = np.minimum(np.rint(tout * out_mult), MAX_TOKENS).astype(np.int64)
            hit = rng.random(m) < prof.cache_rate
            prefix = np.floor(tin * rng.uniform(0.3, 0.95, m) / 64) * 64
            cache = np.where(hit, prefix, 0).astype(np.int64)
            hit &= cache > 0
        else:
            tout = np.zeros(m, dtype=np.int64)
            cache = np.zeros(m, dtype=np.int64)
            hit = np.zeros(m, dtype=bool)

        # Latency: lognormal body, Pareto tail, incident multiplier.
        noise = rng.lognormal(0.0, prof.latency_sigma, m)
        tail = np.where(
            rng.random(m) < prof.tail_prob,
            np.minimum(2.0 * (1.0 + rng.pareto(prof.tail_alpha, m)), 100.0),
            1.0,
        )
        slow = noise * tail * lat_mult
        queue = rng.exponential(prof.queue_ms, m) * lat_mult
        if gen:
            prefill = (prof.base_ms + prof.prefill_ms_per_token * (tin - cache)) * slow
            tpot = (
                prof.tpot_ms * rng.lognormal(0.0, 0.15, m)
                * (1.0 + tin / prof.tpot_context_tokens) * tail * lat_mult
            )
            ttft = queue + prefill
            latency = ttft + tpot * np.maximum(tout - 1, 0)
        else:
            tpot = ttft = np.zeros(m)
            latency = queue + (prof.base_ms + prof.prefill_ms_per_token * tin) * slow

        # Errors: base rate rising with context length, or the burst rate; too slow = timeout.
        ratio = np.minimum(tin / prof.max_input, 1.5)
        p_err = np.maximum(prof.error_rate + prof.long_context_error * ratio**2, burst_p)
        err = rng.random(m) < p_err
        u = rng.random(m)
        kinds = np.where(
            burst,
            np.searchsorted(np.cumsum(_BURST_ERROR_W), u, "right"),
            np.searchsorted(np.cumsum(_ERROR_W), u, "right"),
        )
        kinds = np.minimum(kinds, len(_ERROR_TYPES) - 1)
        if not gen:
            kinds[kinds == _CONTENT_FILTER] = _SERVER_ERROR
        too_slow = ~err & (latency > prof.timeout_ms)
        err |= too_slow
        kinds[too_slow] = _TIMEOUT
        err_latency = np.select(
            [kinds == _TIMEOUT, kinds == _RATE_LIMITED, kinds == _SERVER_ERROR],
            [
                prof.timeout_ms * rng.uniform(1.0, 1.02, m),
                rng.lognormal(math.log(6.0), 0.5, m),
                latency * rng.uniform(0.05, 1.0, m),
            ],
            ttft if gen else latency,
        )
        latency = np.minimum(np.where(err, err_latency, latency), _DAY_MS)
        queue = np.where(err & (kinds == _RATE_LIMITED), 0.0, queue)
        status_5xx = np.where(rng.random(m) < 0.8, 500, 503)

        # Cost: uncached input + discounted cached input + output.
        price_in = prof.price_in_per_mtok / 1e6
        cost = (
            (tin - cache) * price_in
            + cache * price_in * prof.cached_price_ratio
            + tout * prof.price_out_per_mtok / 1e6
        )
        cost = np.where(err, np.where(kinds == _CONTENT_FILTER, tin * price_in, 0.0), cost)

        # Quality: classifier prediction and confidence (lower under drift), feedback.
        if prof.operation == "classify":
            label_w = 1.0 / np.arange(1, len(prof.labels) + 1)
            label_idx = rng.choice(len(prof.labels), size=m, p=label_w / label_w.sum())
            labels = np.asarray(prof.labels, dtype=object)
            predictions: list[str | None] = labels[label_idx].tolist()
            conf = np.where(drift, rng.beta(4.0, 3.0, m), rng.beta(9.0, 2.0, m))
            good = rng.random(m) < conf
            confidences: list[float | None] = np.round(conf, 4).tolist()
        else:
            predictions = [None] * m
            confidences = [None] * m
            good = rng.random(m) < np.where(drift | (lat_mult > 1), 0.55, 0.85)
        gives_feedback = (rng.random(m) < prof.feedback_rate) & ~err

        # Features and labels.
        cpt = np.maximum(rng.normal(prof.chars_per_token, 0.35, m), 1.5)
        prompt_length = np.rint(tin * cpt).tolist()
        langs = _CODE_LANGS if prof.operation == "text_completion" else _TEXT_LANGS
        language = _categorical(rng, langs, drift)
        client = _categorical(rng, _CLIENTS, drift)
        app_w = tuple(1.0 / (k + 1) for k in range(len(prof.app_features)))
        app_feature = _categorical(rng, (prof.app_features, app_w), np.zeros(m, dtype=bool))
        tenant = _categorical(rng, (_TENANTS, _TENANT_W), np.zeros(m, dtype=bool))
        region = _categorical(rng, _REGIONS, np.zeros(m, dtype=bool))
        users = rng.integers(0, 50_000, m).tolist()
        temp_w = _TEMP_W.get(prof.operation)
        temps = (
            np.asarray(_TEMPERATURES)[rng.choice(4, size=m, p=temp_w)].tolist()
            if temp_w else [None] * m
        )
        turns = None
        if prof.operation == "chat":
            turns = (1 + rng.poisson(1.5, m)).astype(float).tolist()
        trace_ids = _hex_ids(rng, m, 2)
        span_ids = _hex_ids(rng, m, 1)

        # Build the structs from plain Python values.
        deployment = "canary" if prof.canary else "stable"
        service = prof.service_name
        ok_finish = "stop" if gen else None
        events: list[InferenceEvent] = []
        cols = zip(
            numbers.tolist(), (start + off).tolist(), err.tolist(), kinds.tolist(),
            status_5xx.tolist(), np.round(latency, 3).tolist(), np.round(ttft, 3).tolist(),
            np.round(queue, 3).tolist(), np.round(tpot, 3).tolist(), tin.tolist(), tout.tolist(),
            cache.tolist(), hit.tolist(), np.round(cost, 9).tolist(), length.tolist(),
            predictions, confidences, good.tolist(), gives_feedback.tolist(), prompt_length,
            temps, language, client, app_feature, tenant, region, users, trace_ids, span_ids,
            strict=True,
        )
        for k, (
            number, ts, is_err, kind, s5xx, lat, t_first, q, t_tok, n_in, n_out, n_cache, is_hit,
            usd, at_length, pred, confidence, is_good, has_fb, plen, temp, lang, cli, app, ten,
            reg, user, trace_id, span_id,
        ) in enumerate(cols):
            features: dict[str, float | str] = {"prompt_length": plen, "language": lang,
                                                "client": cli}
            if temp is not None:
                features["temperature"] = temp
            if turns is not None:
                features["num_turns"] = turns[k]
            if is_err:
                error_type: str | None = _ERROR_TYPES[kind]
                http_status: int | None = (504, 429, s5xx, 400)[kind]
                finish = "content_filter" if kind == _CONTENT_FILTER else None
                streamed = False
            else:
                error_type = http_status = None
                finish = ("length" if at_length else "stop") if gen else ok_finish
                streamed = gen
            events.append(InferenceEvent(
                event_id=f"{self.id_prefix}-{number}",
                timestamp=ts,
                trace_id=trace_id,
                span_id=span_id,
                service=service,
                environment=self.environment,
                tenant=ten,
                user=f"u{user:05x}",
                region=reg,
                model=prof.name,
                model_version=prof.version,
                provider=prof.provider,
                operation=prof.operation,
                status="error" if is_err else "ok",
                error_type=error_type,
                http_status=http_status if is_err else 200,
                finish_reason=finish,
                latency_ms=lat,
                time_to_first_token_ms=t_first if streamed else None,
                queue_wait_ms=q,
                time_per_output_token_ms=t_tok if streamed else None,
                input_tokens=n_in,
                output_tokens=n_out if gen else None,
                cache_read_tokens=n_cache if gen else None,
                cache_hit=is_hit if gen else None,
                cost_usd=usd if prof.sends_cost else None,
                prediction=None if is_err else pred,
                confidence=None if is_err else confidence,
                feedback_score=(1.0 if is_good else 0.0) if has_fb else None,
                features=features,
                attributes={"app_feature": app, "deployment": deployment},
            ))
        return events, (tin + tout).astype(float)

    def _samples(
        self,
        rng: np.random.Generator,
        start: float,
        t0: int,
        seconds: int,
        loads: list[_Window],
        nominal: list[float],
    ) -> list[tuple[int, list[ResourceSample]]]:
        """One sample per host per complete second, its utilisations following the load."""
        per_second: list[list[ResourceSample]] = [[] for _ in range(seconds)]
        if seconds == 0:
            return []
        for prof, load, rate in zip(self.models, loads, nominal, strict=True):
            h = prof.hosts
            shape = (seconds, h)
            capacity = max(rate, 1e-9) / 0.6  # nominal load is 60% of a host
            token_capacity = max(rate * prof.mean_tokens(), 1e-9) / 0.5
            jitter = rng.lognormal(0.0, 0.08, shape)
            util = (load.counts / h)[:, None] / capacity * jitter
            kv = (load.tokens / h)[:, None] / token_capacity * jitter
            spike = load.spike[:, None] > 1
            gpu = np.clip(0.05 + 0.9 * util + rng.normal(0, 0.02, shape), 0, 1)
            gpu = np.where(spike, np.maximum(gpu, rng.uniform(0.95, 1.0, shape)), gpu)
            cpu = np.clip(0.08 + 0.5 * util + rng.normal(0, 0.03, shape), 0, 1)
            mem = np.clip(0.45 + 0.15 * util + rng.normal(0, 0.01, shape), 0, 1)
            kv = np.clip(kv + rng.normal(0, 0.02, shape), 0, 1)
            kv = np.where(spike, np.maximum(kv, rng.uniform(0.9, 1.0, shape)), kv)
            gpu_mem = np.clip(0.6 + 0.35 * kv, 0, 1) if prof.generative else np.full(shape, 0.3)
            queue = rng.poisson(np.maximum(util - 0.7, 0) * 40 + 0.3 * util)
            extra = np.rint(3.0 * load.spike[:, None] * rng.uniform(0.5, 1.5, shape))
            queue = queue + np.where(spike, extra, 0).astype(np.int64)
            server = "vllm" if prof.generative else "triton"
            rows = zip(
                np.round(cpu, 4).tolist(), np.round(mem, 4).tolist(), np.round(gpu, 4).tolist(),
                np.round(gpu_mem, 4).tolist(), np.round(kv, 4).tolist(), queue.tolist(),
                strict=True,
            )
            hosts = prof.host_names()
            for b, (c_row, m_row, g_row, gm_row, kv_row, q_row) in enumerate(rows):
                ts = start + t0 + b + 1
                for j, host in enumerate(hosts):
                    per_second[b].append(ResourceSample(
                        timestamp=ts,
                        host=host,
                        server=server,
                        model=prof.name,
                        cpu_util=c_row[j],
                        memory_util=m_row[j],
                        memory_bytes=int(m_row[j] * (256 << 30)),
                        gpu_util=g_row[j],
                        gpu_memory_util=gm_row[j],
                        kv_cache_util=kv_row[j] if prof.generative else None,
                        queue_length=int(q_row[j]),
                    ))
        return [(t0 + b + 1, batch) for b, batch in enumerate(per_second)]


def check_start(start: float) -> None:
    if not (math.isfinite(start) and 0 <= start <= 1e11):
        raise ValueError(f"start must be Unix seconds in [0, 1e11], got {start}")


def synthetic(
    seed: int,
    rate: float,
    duration: float | None,
    start: float,
    models: Sequence[ModelProfile] = DEFAULT_MODELS,
    incidents: Iterable[Incident | str] = (),
    *,
    resources: bool = True,
) -> Iterator[tuple[float, Record]]:
    """Seeded synthetic traffic: ``(offset_seconds, record)`` pairs in event-time order.

    Events arrive as a Poisson process at ``rate`` per second over ``duration`` seconds
    (None: endless), spread over ``models`` by their shares, with ``timestamp = start +
    offset``. With ``resources``, each host of each model also reports one
    :class:`ResourceSample` at the end of every complete second. ``incidents`` are
    :class:`Incident` objects or their text form. Bad arguments raise ValueError now,
    not at the first ``next()``.

    >>> run = lambda: list(synthetic(seed=1, rate=50.0, duration=3.0, start=1.7e9))
    >>> records = run()
    >>> records == run()
    True
    >>> offsets = [offset for offset, _ in records]
    >>> offsets == sorted(offsets) and 0.0 <= offsets[0] and offsets[-1] <= 3.0
    True
    >>> sorted({type(record).__name__ for _, record in records})
    ['InferenceEvent', 'ResourceSample']
    """
    traffic = TrafficModel(models, incidents, seed=seed)
    return traffic.stream(rate, duration, start, resources=resources)
