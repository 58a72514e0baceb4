"""clinicmm.serve."""
