"""clinicmm.ingest."""
