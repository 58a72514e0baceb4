"""clinicmm.fusion."""
