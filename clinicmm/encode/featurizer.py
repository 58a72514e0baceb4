"""Per-patient evidence: each modality's embedding plus the graph nodes it links to.

The encode stage and the registered model's ``predict`` both go through :class:`Featurizer`, so a patient is
encoded the same way in training and in production. Image and note embeddings are cached on disk (see
:mod:`clinicmm.encode.cache`); the genomics features are cheap and computed each time from the fitted preprocessor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.config import EncodersSpec
from clinicmm.encode.cache import CacheStats, EmbeddingCache, encode_in_chunks
from clinicmm.errors import StageError
from clinicmm.files import atomic_write_bytes, digest_bytes, digest_files
from clinicmm.ingest.cohort import patient_inputs, series_list
from clinicmm.keys import Modality, Node

log = logging.getLogger("clinicmm")


@dataclass
class EncodedCohort:
    """Embeddings (NaN rows where a modality is absent) and graph links, one entry per patient."""

    patients: list[str]
    vectors: dict[str, np.ndarray]  # modality -> (N, dim)
    links: dict[str, list[list[str]]]  # modality -> per patient, names of linked graph nodes
    failures: list[dict] = field(default_factory=list)  # {patient_id, modality, reason}
    # modality -> {encoded, cached, failed}; omics adds computed and the link counts of Featurizer.omics
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def content_digest(self) -> str:
        """Digest of the embeddings and links (not of the cache statistics): equal outputs, equal digest."""
        arrays = [np.ascontiguousarray(self.vectors[k]).tobytes() for k in sorted(self.vectors)]
        return digest_bytes(*arrays, json.dumps([self.patients, self.links], sort_keys=True))

    def has(self, modality: str) -> np.ndarray:
        return ~np.isnan(self.vectors[modality]).any(axis=1)

    def save(self, folder: Path, pseudonymise: Callable[[str], str] | None = None) -> None:
        """``embeddings.npz`` and ``evidence.json`` under ``folder``. With ``pseudonymise`` (the keyed pseudonym of a
        patient id, handed in by a caller that holds the key: encode cannot import :mod:`clinicmm.privacy`),
        ``evidence.json`` names each patient (and each failure) by it, never by the id; :meth:`load` then needs
        the pseudonym -> id map of the cohort to give the ids back."""
        import io

        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **self.vectors)
        atomic_write_bytes(folder / "embeddings.npz", buf.getvalue())
        name = pseudonymise or (lambda p: p)
        meta = {
            "ids": "pseudonym" if pseudonymise is not None else "patient_id",
            "patients": [name(p) for p in self.patients],
            "links": self.links,
            "failures": [_renamed(f, name) for f in self.failures],
            "stats": self.stats,
        }
        atomic_write_bytes(folder / "evidence.json", json.dumps(meta).encode())

    @classmethod
    def load(cls, folder: Path, ids: Mapping[str, str] | None = None) -> EncodedCohort:
        """The cohort :meth:`save` wrote, with patient ids. ``ids`` maps pseudonym -> patient id (the cohort's ids
        hashed with the same key); it is needed when ``evidence.json`` names patients by pseudonym."""
        path = folder / "evidence.json"
        meta = json.loads(path.read_text())
        with np.load(folder / "embeddings.npz") as z:
            vectors = {k: z[k] for k in z.files}
        patients, failures = meta["patients"], meta["failures"]
        if meta.get("ids") == "pseudonym":
            if ids is None:
                raise StageError(
                    f"{path} names patients by keyed pseudonym; load it with the pseudonym -> patient id map of "
                    "the cohort (the ids hashed with the workflow's privacy key)."
                )
            unknown = [p for p in patients if p not in ids]
            if unknown:
                raise StageError(
                    f"{path}: {len(unknown)} of {len(patients)} encoded patients are not in this cohort under this "
                    "privacy key (the key or the cohort changed since encode ran): rerun `clinicmm encode`."
                )
            patients = [ids[p] for p in patients]
            failures = [_renamed(f, lambda p: ids.get(p, p)) for f in failures]
        return cls(patients, vectors, meta["links"], failures, meta["stats"])


def load_encoded(wf, folder: Path | None = None) -> EncodedCohort:
    """The encode stage's :class:`EncodedCohort` of workflow ``wf`` (``folder``: default ``workdir/encode``; a
    shard folder works too), patients named by id again: ``evidence.json`` names them by keyed pseudonym."""
    from clinicmm.ingest.cohort import Cohort
    from clinicmm.pseudo import naming, workflow_key

    cohort = Cohort.load(wf.work / "ingest")
    _, ids = naming(workflow_key(wf), cohort.patients(labelled=False))
    return EncodedCohort.load(Path(folder) if folder is not None else wf.work / "encode", ids)


def _renamed(failure: dict, name: Callable[[str], str]) -> dict:
    """A failure row with its patient id, also where its reason quotes it (a file path), renamed by ``name``."""
    pid = failure.get("patient_id")
    if not pid:
        return failure
    reason = failure.get("reason")
    return failure | {"patient_id": name(pid)} | ({"reason": reason.replace(pid, name(pid))} if reason else {})


class Featurizer:
    """Turns raw patient inputs into :class:`EncodedCohort` (encoders are built on first use)."""

    def __init__(
        self, spec: EncodersSpec, knowledge, preprocessor=None, cache_dir: Path | None = None, progress: bool = True
    ):
        self.spec = spec
        self.knowledge = knowledge
        self.preprocessor = preprocessor
        self.cache_dir = cache_dir
        self.progress = progress  # a tqdm bar (on a terminal) while images and notes encode
        self._image = self._text = self._matcher = None

    # encoders, built lazily: a notes-only dataset never loads MONAI, an imaging-only one never transformers
    @property
    def image_encoder(self):
        if self._image is None:
            from clinicmm.encode.imaging.encoder import ImageEncoder

            self._image = ImageEncoder(self.spec.image)
        return self._image

    @property
    def text_encoder(self):
        if self._text is None:
            from clinicmm.encode.text.encoder import TextEncoder

            self._text = TextEncoder(self.spec.text)
        return self._text

    @property
    def matcher(self):
        if self._matcher is None:
            from clinicmm.knowledge.concepts import ConceptMatcher

            self._matcher = ConceptMatcher(self.knowledge.concepts())
        return self._matcher

    def _cache(self, modality: str, fingerprint: str) -> EmbeddingCache | None:
        return EmbeddingCache(self.cache_dir / modality, fingerprint) if self.cache_dir else None

    # ------------------------------------------------------------------------------------------ images
    def images(self, series: list, body_parts: list[str]) -> tuple[np.ndarray, list[list[str]], dict]:
        """Per patient: the embedding of its series and the body-site concept it shows.

        ``series[i]`` is None (no image), a list of file paths (one series) or a list of such lists (several series,
        ``imaging.series_per_patient`` > 1): their embeddings are averaged, and the patient fails only when every
        one of its series fails.
        """
        enc = self.image_encoder
        groups = [series_list(s) for s in series]
        flat = [(i, files) for i, group in enumerate(groups) for files in group]
        out = np.full((len(series), enc.dim), np.nan, dtype=np.float32)
        stats = {"encoded": 0, "cached": 0, "failed": 0}
        failures: dict[int, str] = {}
        if flat:
            digests = [digest_files(files) for _, files in flat]
            quiet = _without_bar(enc.encode)

            def run(positions: list[int]) -> tuple[np.ndarray, dict[int, str]]:
                return quiet([flat[p][1] for p in positions])

            vecs, cstats = _through_cache(
                self._cache("image", enc.fingerprint()),
                digests,
                run,
                enc.dim,
                self.spec.image.batch_size,
                "image",
                "series",
                self.progress,
            )
            reasons: dict[int, list[str]] = {}
            for (i, _), d in zip(flat, digests):
                if d in cstats.failed:
                    reasons.setdefault(i, []).append(cstats.failed[d])
            owners = np.array([i for i, _ in flat])
            for i in np.unique(owners):
                good = vecs[owners == i]
                good = good[~np.isnan(good).any(axis=1)]
                if len(good):
                    out[i] = good.mean(axis=0)
                else:
                    failures[int(i)] = "; ".join(reasons.get(int(i), ["no series could be encoded"]))
            stats = {"encoded": cstats.misses, "cached": cstats.hits, "failed": len(failures)}
        concepts = [self._body_site(bp) if groups[i] and i not in failures else [] for i, bp in enumerate(body_parts)]
        return out, concepts, {"stats": stats, "failures": failures}

    def _body_site(self, body_part: str) -> list[str]:
        concept = self.knowledge.concept_for_body_part(body_part) if body_part else None
        return [concept] if concept else []

    # ------------------------------------------------------------------------------------------- notes
    def notes(self, texts: list[list[str]]) -> tuple[np.ndarray, list[list[str]], dict]:
        """Per patient: the mean embedding of its notes and the concepts they mention positively."""
        enc = self.text_encoder
        flat = [(i, t) for i, ts in enumerate(texts) for t in ts if t and t.strip()]
        out = np.full((len(texts), enc.dim), np.nan, dtype=np.float32)
        stats = {"encoded": 0, "cached": 0, "failed": 0}
        if flat:
            digests = [digest_bytes(t) for _, t in flat]
            quiet = _without_bar(enc.encode)

            def run(positions: list[int]) -> tuple[np.ndarray, dict[int, str]]:
                return quiet([flat[p][1] for p in positions]), {}

            vecs, cstats = _through_cache(
                self._cache("note", enc.fingerprint()),
                digests,
                run,
                enc.dim,
                self.spec.text.batch_size,
                "note",
                "note",
                self.progress,
            )
            owners = np.array([i for i, _ in flat])
            for i in np.unique(owners):
                out[i] = vecs[owners == i].mean(axis=0)
            stats = {"encoded": cstats.misses, "cached": cstats.hits, "failed": 0}
        concepts = [sorted({c for t in ts if t for c in self.matcher.positive(t)}) for ts in texts]
        return out, concepts, {"stats": stats, "failures": {}}

    # ------------------------------------------------------------------------------------------- omics
    def omics(
        self, patients: list[str], expression: pd.DataFrame | None, mutations: pd.DataFrame | None, present: np.ndarray
    ):
        """Standardised features and linked genes from the fitted preprocessor (rows absent: NaN).

        Only features that name a gene node of the graph compete for a patient's link budget (see
        :mod:`clinicmm.encode.genomics`). The stats count, besides the patients computed, how the model's features
        link (``features_linked``, ``features_not_in_graph``, ``features_unmapped``, ``features_region``, also
        per layer), the links made (``gene_links``) and the patients with omics but no gene link
        (``patients_without_gene_links``).
        """
        pre = self.preprocessor
        feats = pre.features(expression, mutations, patients).astype(np.float32)
        feats[~present] = np.nan
        graph = set(self.knowledge.names(Node.GENE)) if self.knowledge is not None else None
        evidence = pre.evidence(expression, mutations, patients, graph)
        genes = [sorted(evidence.get(p, [])) if ok else [] for p, ok in zip(patients, present)]
        stats = {"encoded": 0, "cached": 0, "failed": 0, "computed": int(present.sum())}  # no network, nothing to cache
        if graph is not None:
            stats |= pre.link_counts(graph)
            stats["gene_links"] = sum(len(g) for g in genes)
            stats["patients_without_gene_links"] = sum(1 for g, ok in zip(genes, present) if ok and not g)
            regions = stats.get("features_region", 0)  # arm / band columns: only with a features: cytoband layer
            log.info(
                "omics: %d of %d features link to graph genes (%d name genes the graph lacks, %d name no gene%s); "
                "%d of %d patients have no gene link",
                stats["features_linked"], stats["features"], stats["features_not_in_graph"], stats["features_unmapped"],
                f", {regions} name a chromosome arm or band, pooled over its genes by the gene-set models"
                if regions else "",
                stats["patients_without_gene_links"], stats["computed"],
            )  # fmt: skip
        return feats, genes, {"stats": stats, "failures": {}}

    # -------------------------------------------------------------------------------------- all at once
    def encode(
        self,
        patients: list[str],
        series: list,
        body_parts: list[str],
        texts: list[list[str]],
        expression: pd.DataFrame | None,
        mutations: pd.DataFrame | None,
        has_omics: np.ndarray,
    ) -> EncodedCohort:
        """Every modality of these patients; a modality nobody has gets ``None`` vectors, failures carry the row."""
        steps = {
            Modality.IMAGE: (lambda: self.images(series, body_parts)) if any(series) else None,
            Modality.NOTE: (lambda: self.notes(texts)) if any(texts) else None,
            Modality.OMICS: (lambda: self.omics(patients, expression, mutations, has_omics))
            if self.preprocessor is not None and has_omics.any()
            else None,
        }
        vectors, links, stats, failures = {}, {}, {}, []
        for modality, step in steps.items():
            m = modality.value
            if step is None:
                vectors[m], links[m], stats[m] = None, [[] for _ in patients], {"encoded": 0, "cached": 0, "failed": 0}
                continue
            vectors[m], links[m], info = step()
            stats[m] = info["stats"]
            failures += [{"row": i, "modality": m, "reason": r} for i, r in info["failures"].items()]
        return EncodedCohort(patients, vectors, links, failures, stats)


def _without_bar(encode: Callable) -> Callable:
    """``encode`` with its own progress bar off (the cache's bar counts every input across batches)."""
    import inspect

    return partial(encode, progress=False) if "progress" in inspect.signature(encode).parameters else encode


def _through_cache(
    cache: EmbeddingCache | None, digests, run, dim: int, chunk: int, modality: str, unit: str, progress: bool = True
):
    """Vectors of every input, ``chunk`` (the encoder's batch size) at a time: each batch is committed to the cache
    before the next is encoded, so a killed encode reruns only what it had not finished."""
    desc = f"encoding {modality}s"
    if cache is not None:
        return cache.get_or_encode(digests, run, dim, chunk=chunk, desc=desc, unit=unit, progress=progress)
    vecs = np.full((len(digests), dim), np.nan, dtype=np.float32)
    stats = CacheStats()

    def keep(positions: list[int], chunk_vecs: np.ndarray, failures: dict[int, str]) -> None:
        for j, p in enumerate(positions):
            if j in failures:
                stats.failed[digests[p]] = failures[j]
            else:
                vecs[p] = chunk_vecs[j]
                stats.misses += 1

    encode_in_chunks(range(len(digests)), run, keep, chunk, desc, unit, progress)
    return vecs, stats


def encode_cohort(cohort, featurizer: Featurizer, patients: list[str]) -> EncodedCohort:
    """Encode every modality of the given patients (cached where an encoder and input are unchanged).

    A modality nobody has is stored as a one-column block of NaN; failures name the patient.
    """
    from clinicmm.keys import HAS

    inputs = patient_inputs(cohort, patients)
    has_omics = cohort.manifest.set_index("patient_id").loc[patients, HAS[Modality.OMICS]].to_numpy()
    encoded = featurizer.encode(
        patients,
        inputs["series"],
        inputs["body_parts"],
        inputs["texts"],
        cohort.expression,
        cohort.mutations,
        has_omics,
    )
    for m, v in encoded.vectors.items():
        if v is None:
            encoded.vectors[m] = np.full((len(patients), 1), np.nan, dtype=np.float32)
    encoded.failures = [{"patient_id": patients[f.pop("row")], **f} for f in encoded.failures]
    return encoded
