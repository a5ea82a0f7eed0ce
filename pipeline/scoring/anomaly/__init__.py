"""Anomaly scores in [0, 1] per series and window, from the vector of window metrics.

Two scorers share the :class:`AnomalyScorer` contract (``learn_one``/``score_one``,
warm-up, checkpoint/restore): a robust median/MAD z-score (:class:`MedianMADScorer`, the
default) and river's Half-Space Trees with data-driven limits
(:class:`HalfSpaceTreesScorer`). Pure: no I/O.

Evaluation (seeded, 5 series × 1,000 windows of 5 metrics — p99 latency, error rate, mean
confidence, output tokens, cost — with 2 % injected anomalies; score, then learn)::

    scenario                        median/MAD            Half-Space Trees
                                    AUC   TPR   FPR       AUC   TPR   FPR
    one metric off by 4–8 σ         0.99  0.94  0.5 %     0.70  0.47  7.5 %
    same, log-normal p99            1.00  0.98  0.7 %     0.67  0.42  7.5 %
    same, p99 trending up           0.99  0.94  0.8 %     0.69  0.44  7.3 %
    correlation break (2 × 2.5 σ)   0.98  0.31  0.6 %     0.99  1.00  11 %

(TPR/FPR at score ≥ 0.5.) Half-Space Trees isolate a point only in the trees that split on
the metric that is off, near their root; with five metrics most trees do not, so single-metric
anomalies — the common case (a p99 spike, an error burst) — are ranked poorly. It wins only on
joint shifts of correlated metrics, each unremarkable alone. Hence median/MAD is the default.
``benchmarks/drift_eval.py`` (streams of real 10 s volumes, sustained shifts) agrees: at the
same false-alarm rate median/MAD flags 46 % of the target shifts within 3 windows,
Half-Space Trees 1 %. Its recommended threshold and feeding (which windows, which metrics)
are in :mod:`pipeline.scoring.drift.thresholds`.

>>> sorted(SCORERS)
['half_space_trees', 'median_mad']
"""

from pipeline.scoring.anomaly.base import AnomalyScorer
from pipeline.scoring.anomaly.half_space_trees import HalfSpaceTreesScorer
from pipeline.scoring.anomaly.mad import MedianMADScorer

__all__ = ["SCORERS", "AnomalyScorer", "HalfSpaceTreesScorer", "MedianMADScorer"]

SCORERS: dict[str, type[AnomalyScorer]] = {
    MedianMADScorer.name: MedianMADScorer,
    HalfSpaceTreesScorer.name: HalfSpaceTreesScorer,
}
