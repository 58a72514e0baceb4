"""clinicmm.genomics."""
