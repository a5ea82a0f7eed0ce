"""The simulated models: how each model version behaves (traffic share, tokens, latency,
errors, cache, price, labels, feedback), and the default mix the simulator and the demo
run. Plain data; :mod:`pipeline.dev.simulate` draws traffic from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_MODELS", "ModelProfile"]

_GENERATIVE = frozenset({"chat", "text_completion"})


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one model version behaves: traffic share, token, latency, error and price model.

    Latency of a generative operation (``chat``, ``text_completion``) is
    ``queue + TTFT + TPOT × (output_tokens − 1)`` with TTFT = ``base_ms`` + prefill per
    uncached input token; other operations take ``base_ms`` + per-token time. Both get
    a lognormal noise factor and, with probability ``tail_prob``, a Pareto tail factor.
    """

    name: str
    version: str = ""
    operation: str = "chat"  # chat | text_completion | embeddings | classify | ...
    provider: str = "inferwatch-sim"
    service: str = ""  # defaults to ``<name>-api``
    share: float = 1.0  # relative traffic share in synthetic mode
    hosts: int = 2
    canary: bool = False
    # tokens (lognormal: median, sigma; clipped to the max)
    input_median: float = 600.0
    input_sigma: float = 1.0
    max_input: int = 16_384
    output_median: float = 150.0
    output_sigma: float = 0.9
    max_output: int = 4_096
    chars_per_token: float = 4.0
    # timing, milliseconds
    queue_ms: float = 10.0  # mean queue wait
    base_ms: float = 40.0
    prefill_ms_per_token: float = 0.12
    tpot_ms: float = 25.0
    tpot_context_tokens: float = 32_000.0  # TPOT grows by 1× per this many context tokens
    latency_sigma: float = 0.25
    tail_prob: float = 0.01
    tail_alpha: float = 1.5
    timeout_ms: float = 60_000.0
    # errors, cache, price (USD per million tokens)
    error_rate: float = 0.005
    long_context_error: float = 0.02  # extra error probability at max_input context
    cache_rate: float = 0.25
    price_in_per_mtok: float = 1.0
    price_out_per_mtok: float = 4.0
    cached_price_ratio: float = 0.5
    # False: events carry tokens but no cost_usd, and the pipeline prices them from its
    # price table (the shipped one lists these prices for provider inferwatch-sim)
    sends_cost: bool = True
    # quality
    labels: tuple[str, ...] = ()  # predictions of a classifier
    feedback_rate: float = 0.03
    app_features: tuple[str, ...] = ("assistant",)

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 128:
            raise ValueError(f"model name must have 1..128 characters, got {self.name!r}")
        if self.share <= 0 or self.hosts < 1:
            raise ValueError(f"model {self.name!r}: share must be > 0 and hosts >= 1")
        if self.operation == "classify" and not self.labels:
            raise ValueError(f"model {self.name!r}: a classify model needs labels")
        if not self.app_features:
            raise ValueError(f"model {self.name!r}: app_features must not be empty")

    @property
    def generative(self) -> bool:
        """True when the operation streams tokens (so TTFT and TPOT exist)."""
        return self.operation in _GENERATIVE

    @property
    def service_name(self) -> str:
        return self.service or f"{self.name}-api"

    def host_names(self) -> list[str]:
        version = f"-{self.version}" if self.version else ""
        return [f"{self.name}{version}-{i}" for i in range(self.hosts)]

    def mean_tokens(self) -> float:
        """Expected input + output tokens of one request (for nominal KV-cache load)."""
        mean_in = self.input_median * math.exp(self.input_sigma**2 / 2)
        mean_out = self.output_median * math.exp(self.output_sigma**2 / 2)
        mean_out = min(mean_out, self.max_output) if self.generative else 0.0
        return min(mean_in, self.max_input) + mean_out


DEFAULT_MODELS: tuple[ModelProfile, ...] = (
    ModelProfile(
        "gpt-chat", "2024-06", "chat", share=0.40, hosts=3,
        input_median=900, input_sigma=1.0, output_median=180, output_sigma=0.9, max_output=2048,
        price_in_per_mtok=2.5, price_out_per_mtok=10.0,
        app_features=("assistant", "summarize", "search", "email_draft"),
    ),
    ModelProfile(
        "gpt-chat", "2024-09", "chat", share=0.08, hosts=1, canary=True,
        input_median=900, input_sigma=1.0, output_median=200, output_sigma=0.9, max_output=2048,
        tpot_ms=20.0, error_rate=0.01, price_in_per_mtok=2.5, price_out_per_mtok=10.0,
        app_features=("assistant", "summarize", "search", "email_draft"),
    ),
    ModelProfile(
        "code-complete", "1.3", "text_completion", share=0.22, hosts=2,
        input_median=1400, input_sigma=0.8, output_median=24, output_sigma=1.2, max_output=256,
        chars_per_token=3.3, queue_ms=5.0, base_ms=25.0, prefill_ms_per_token=0.08,
        tpot_ms=12.0, timeout_ms=20_000.0, cache_rate=0.5,
        price_in_per_mtok=0.5, price_out_per_mtok=1.5, sends_cost=False,
        app_features=("ide_inline", "ide_chat", "code_review"),
    ),
    ModelProfile(
        "embed-small", "3", "embeddings", share=0.20, hosts=1,
        input_median=300, input_sigma=0.9, max_input=8_191, queue_ms=2.0, base_ms=8.0,
        prefill_ms_per_token=0.01, latency_sigma=0.3, timeout_ms=10_000.0, error_rate=0.002,
        long_context_error=0.0, price_in_per_mtok=0.02, price_out_per_mtok=0.0, feedback_rate=0.0,
        app_features=("rag_index", "rag_query", "dedupe"),
    ),
    ModelProfile(
        "intent-clf", "2.1", "classify", share=0.10, hosts=1,
        input_median=60, input_sigma=0.7, max_input=512, queue_ms=1.0, base_ms=4.0,
        prefill_ms_per_token=0.02, latency_sigma=0.35, timeout_ms=5_000.0, error_rate=0.002,
        long_context_error=0.0, price_in_per_mtok=0.1, price_out_per_mtok=0.0,
        labels=("billing", "tech_support", "sales", "account", "other"), feedback_rate=0.05,
        app_features=("routing",),
    ),
)
