"""clinicmm.encode."""
