"""The fusion models, one per file (as monai.networks.nets keeps them)."""
