"""clinicmm.encode.text."""
