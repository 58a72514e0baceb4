"""clinicmm.io."""
