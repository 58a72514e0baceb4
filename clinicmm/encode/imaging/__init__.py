"""clinicmm.encode.imaging."""
