"""clinicmm.pipeline."""
