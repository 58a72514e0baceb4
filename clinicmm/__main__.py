"""``python -m clinicmm`` is the ``clinicmm`` command; launchers use it: ``torchrun --nproc_per_node 2 -m clinicmm run wf.yaml``."""

from clinicmm.cli import app

if __name__ == "__main__":
    app(prog_name="clinicmm")
