"""clinicmm.fusion.models."""
