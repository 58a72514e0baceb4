"""Evaluation beyond the test split: leakage checks, site-aware splits, external validation, robustness."""
