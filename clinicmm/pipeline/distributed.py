"""Running one workflow across several processes: rank discovery, encoding sharded by rank, rank-0 duties.

clinicmm does not launch processes itself: ``torchrun`` (or a cluster launcher such as ``srun``) starts one
process per device and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``.
:func:`init` then joins ``torch.distributed`` (gloo on CPU, NCCL for CUDA tensors) so that the encode stage can
wait for the other ranks, and Lightning's DDP strategy reuses that same process group for training.

Encoding is split by rank (:mod:`clinicmm.encode.shards`). Without a launcher every function here is a no-op
(one process, rank 0), so the single-machine path is unchanged.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from datetime import timedelta
from pathlib import Path

from clinicmm.config import TrainingSpec
from clinicmm.errors import ConfigError

log = logging.getLogger("clinicmm")

TIMEOUT_ENV = "CLINICMM_DIST_TIMEOUT_S"
# a rank may wait at a barrier while another encodes a large shard: far longer than torch's 30-minute default
DEFAULT_TIMEOUT_S = 6 * 3600


# ------------------------------------------------------------------------------------------- ranks


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Number of processes of this run (``torch.distributed`` if joined, else ``WORLD_SIZE``, else 1)."""
    dist = _dist()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """Global rank of this process (0 without a launcher)."""
    dist = _dist()
    if dist:
        return dist.get_rank()
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    # Lightning's own launcher sets LOCAL_RANK / NODE_RANK only
    local = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or 1
    return int(os.environ.get("NODE_RANK", "0")) * per_node + local


def is_zero() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when a launcher (torchrun, or any that sets WORLD_SIZE) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def requested_processes(spec: TrainingSpec) -> int | None:
    """``devices`` x ``num_nodes`` as a process count, or None where Lightning decides (``auto``, ``-1``)."""
    devices = spec.devices
    if isinstance(devices, list):
        n = len(devices)
    elif isinstance(devices, int) and devices > 0:
        n = devices
    elif isinstance(devices, str) and devices.isdigit():
        n = int(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        return None
    return n * spec.num_nodes


def check_launch(spec: TrainingSpec, source: object = "workflow YAML") -> None:
    """Fail early, with the command to use, when the YAML asks for more processes than were launched.

    Lightning would otherwise re-run the whole ``clinicmm`` command in child processes (its subprocess launcher),
    repeating every stage before training in each of them.
    """
    from clinicmm.training.fit import SPAWNING

    wanted = requested_processes(spec)
    spawns = spec.strategy.startswith(SPAWNING)
    have = int(os.environ.get("WORLD_SIZE", "1"))
    if wanted is None or spawns:
        return
    if not launched() and wanted > 1:
        raise ConfigError(
            f"{source}: training.devices {spec.devices!r} x training.num_nodes {spec.num_nodes} asks for {wanted} "
            f"processes; start them with a launcher, e.g. `torchrun --nproc_per_node {wanted // spec.num_nodes} "
            f"-m clinicmm run WORKFLOW.yaml`, or set training.strategy: ddp_spawn to let Lightning spawn them for "
            "the fit only."
        )
    if launched() and wanted != have:
        raise ConfigError(
            f"{source}: the launcher started {have} processes but training.devices {spec.devices!r} x "
            f"training.num_nodes {spec.num_nodes} = {wanted}. Set devices to the processes per node "
            "(torchrun's --nproc_per_node) and num_nodes to the number of nodes (--nnodes)."
        )


def backend(spec: TrainingSpec) -> str:
    """gloo on CPU; gloo for CPU tensors plus NCCL for CUDA tensors when training on GPUs."""
    import torch

    if spec.accelerator in ("cpu",) or not torch.cuda.is_available():
        return "gloo"
    return "cpu:gloo,cuda:nccl"


def init(spec: TrainingSpec, source: object = "workflow YAML") -> bool:
    """Join the launcher's process group (once); returns True when this process is one of several.

    Ranks above 0 log warnings only, so the console shows each message once.
    """
    if not launched():
        return False
    check_launch(spec, source)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        chosen = backend(spec)
        if "nccl" in chosen:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend=chosen, timeout=timeout)
        atexit.register(_leave)
    if not is_zero():
        logging.getLogger("clinicmm").setLevel(logging.WARNING)
    return True


def _leave() -> None:
    dist = _dist()
    if dist:
        dist.destroy_process_group()


def barrier() -> None:
    dist = _dist()
    if dist:
        dist.barrier()


def agree(value):
    """Rank 0's ``value`` on every rank (e.g. whether a stage is up to date), so all ranks take the same path."""
    dist = _dist()
    if not dist:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------- stages, resume


def checkpoint_dir(wf, model: str) -> Path:
    """Where the fit of ``model`` keeps Lightning's ``last.ckpt`` until the train stage finishes.

    Keyed by the clinicmm version, the encode stage's record and the training settings, so a rerun after a
    crash or a pre-emption resumes its own fit and never one trained on other data, settings or code.
    """
    from clinicmm import __version__
    from clinicmm.config import dump
    from clinicmm.files import digest_bytes
    from clinicmm.pipeline import registry as stages

    key = digest_bytes(__version__, stages.nonce(wf, "encode"), json.dumps(dump(wf.training), sort_keys=True), model)
    return wf.work / "checkpoints" / model / key[:16]


def drop_checkpoints(wf) -> None:
    """Remove the train stage's checkpoints once every model is saved (rank 0)."""
    import shutil

    shutil.rmtree(wf.work / "checkpoints", ignore_errors=True)
