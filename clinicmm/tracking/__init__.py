"""clinicmm.tracking."""
