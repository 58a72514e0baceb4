"""clinicmm.fusion.conv."""
