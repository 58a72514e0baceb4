"""Encode: per-patient embeddings (imaging, notes, genomics) and the evidence that links them to the graph."""
