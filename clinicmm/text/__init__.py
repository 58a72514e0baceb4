"""clinicmm.text."""
