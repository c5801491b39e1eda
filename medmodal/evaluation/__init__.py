"""Scoring trained runs: :mod:`.evaluate` (deep runs), :mod:`.evaluate_baseline`, :mod:`.stats`
(bootstrap / DeLong), :mod:`.metrics`."""

__all__ = ["evaluate", "evaluate_baseline", "metrics", "stats"]
