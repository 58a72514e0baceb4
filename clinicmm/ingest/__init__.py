"""Ingest: index every modality a dataset names, link per patient, split, check for leakage, report."""
