"""clinicmm.imaging."""
