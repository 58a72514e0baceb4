"""clinicmm: multimodal cancer-type prediction (DICOM imaging, clinical notes, genomic tables) fused on a
knowledge graph with a GNN, tracked in MLflow.

Heavy libraries (torch, MONAI, transformers, MLflow) are imported by the modules that use them, so importing
``clinicmm`` and running ``clinicmm --help`` stay fast.
"""

__version__ = "0.1.0"
