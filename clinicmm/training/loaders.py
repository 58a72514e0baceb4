"""Patients as a LightningDataModule whose loaders split the patients by rank, whatever the process count.

The train loader always goes through a ``DistributedSampler`` (one replica when there is one process), so
epoch ``e`` visits the patients in the permutation ``randperm(seed + e)`` and step ``k`` of an N-process run
sees, across its ranks, the same patients as step ``k`` of a one-process run: ``training.batch_size`` is the
global batch, each rank takes ``ceil(batch_size / N)`` of it. Validation uses Lightning's
``UnrepeatedDistributedSampler`` (no padded duplicates, so the reduced metrics are those of the val split
itself) and one batch per rank. The knowledge graph is the same ``HeteroData`` on every rank.
"""

from __future__ import annotations

import math

from clinicmm.config import TrainingSpec
from clinicmm.errors import ConfigError
from clinicmm.training.module import lightning


def per_rank_batch(batch_size: int, world: int) -> int:
    """Each rank's share of the global batch (rounded up, at least 1)."""
    return max(1, math.ceil(batch_size / max(world, 1)))


def make_loader(
    items: list, knowledge, dims: dict[str, int], batch_size: int, sampler=None, p_drop: float = 0.0, seed: int = 0
):
    """A DataLoader of batches (HeteroData) in ``sampler``'s order (else as listed); ``p_drop`` > 0 applies modality
    dropout, drawn from ``seed`` (training only)."""
    from torch.utils.data import DataLoader

    from clinicmm.fusion.batch import collate

    fn = collate(knowledge, dims, modality_dropout=p_drop, seed=seed)
    return DataLoader(items, batch_size=batch_size, sampler=sampler, collate_fn=fn, num_workers=0)


class FusionData(lightning().LightningDataModule):
    """Train and val patients (lists of PatientEvidence) collated into HeteroData batches."""

    def __init__(self, train: list, val: list, knowledge, dims: dict[str, int], spec: TrainingSpec):
        super().__init__()
        self.train, self.val = train, val
        self.knowledge, self.dims, self.spec = knowledge, dims, spec

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self):
        from torch.utils.data import DistributedSampler

        world, rank = self._ranks()
        sampler = DistributedSampler(self.train, num_replicas=world, rank=rank, shuffle=True, seed=self.spec.seed)
        # modality dropout draws per rank (seed + rank): rank 0 of any run draws as a one-process run does
        return make_loader(
            self.train,
            self.knowledge,
            self.dims,
            per_rank_batch(self.spec.batch_size, world),
            sampler,
            self.spec.modality_dropout,
            self.spec.seed + rank,
        )

    def val_dataloader(self):
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        world, rank = self._ranks()
        if 0 < len(self.val) < world:  # Lightning's sampler would stop on a bare assertion (DDP would hang otherwise)
            raise ConfigError(
                f"The validation split holds {len(self.val)} patients but training runs in {world} "
                f"processes, and each process needs at least one: use fewer processes "
                f"(training.devices / num_nodes, torchrun --nproc_per_node) or a larger split.val"
            )
        sampler = UnrepeatedDistributedSampler(self.val, num_replicas=world, rank=rank, shuffle=False)
        return make_loader(self.val, self.knowledge, self.dims, max(1, math.ceil(len(self.val) / world)), sampler)
