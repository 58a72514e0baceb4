"""clinicmm.training."""
