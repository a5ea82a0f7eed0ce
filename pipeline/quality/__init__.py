"""Model quality from delayed feedback: the join, the quality windows, the estimate.

Data flow (``docs/quality.md``)::

    inferwatch.events ──stage 1──▶ stubs ─┐
                                          ├─▶ inferwatch.joins (by join id) ──join──▶
    inferwatch.feedback ──intake─▶ items ─┘
        inferwatch.outcomes (by series) ──quality windows──▶ inferwatch.metrics
                                                              (QualityWindow) → ClickHouse, rules

The maths (``counts``, ``estimate``, ``compare``) are plain classes with no I/O; the
stages (``intake``, ``join_stage``, ``stage``) are what the runtime drives.
"""
