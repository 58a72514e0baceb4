"""clinicmm.demo."""
