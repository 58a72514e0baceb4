"""Evaluation: the test split, k-fold compare with CIs, leave-one-site-out, robustness, external validation."""
