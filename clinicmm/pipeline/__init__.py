"""The pipeline: the stage registry, one function per stage, ``clinicmm run`` and the torchrun glue."""
