"""Evaluation: metrics, paired statistics and drift tests, and the offline runner built on them.

Nothing is re-exported here on purpose: `llmops.evaluation.metrics` loads ROUGE lazily and
the statistics load scipy, so a caller pays only for the module it imports.
"""
