"""clinicmm.knowledge."""
