"""Send predictions back to the hospital as DICOM Comprehensive SR documents, one per patient.

Each SR joins the patient's source CT study (same StudyInstanceUID; highdicom copies the patient and study
modules from the source headers) in a new series of its own, lists every slice of the source series in
CurrentRequestedProcedureEvidenceSequence, and carries this content tree::

    CONTAINER  (LN 18748-4 "Diagnostic Imaging Report")            document title, CID 7000
      HAS CONCEPT MOD   Language of Content = en-US                 TID 1204
      HAS OBS CONTEXT   Observer Type = Device + device name/model  TID 1002 / 1004: the model wrote it
      CONTAINS CONTAINER (LN 19005-8 "Impressions")                 section heading, CID 7001
        HAS CONCEPT MOD  Algorithm Name / Algorithm Version         TID 4019
        CONTAINS CODE (DCM 121073 "Impression") = OncoTree <predicted>
          HAS PROPERTIES NUM (DCM 122157 "Probability") = p  [UCUM "1"]
        CONTAINS CODE (DCM 111023 "Differential Diagnosis/Impression") = OncoTree <other class>   (each class,
          HAS PROPERTIES NUM (DCM 122157 "Probability") = p                                      by probability)
        CONTAINS TEXT (DCM 121106 "Comment") = "automated result, not verified by a physician ..."

The tree is modelled on TID 2000 (Basic Diagnostic Imaging Report) but claims no template: the probabilities
and the algorithm identification go beyond TID 2000's narrative items. LN 18748-4 is the title that PACS and
RIS viewers already show as an imaging report; the DICOM CAD titles (chest, mammography, colon) are
organ-specific and tied to rigid CAD templates, and DICOM has no generic "algorithm result" title. OncoTree is
not a DICOM-registered coding scheme, so it is declared in the CodingSchemeIdentificationSequence
(PS3.3 C.12.1.1.2). The SR is PRELIMINARY and UNVERIFIED: a physician signs it off.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import generate_uid

from clinicmm.errors import InputError
from clinicmm.ingest.dicom import tag_name
from clinicmm.keys import Col, Node, Status

log = logging.getLogger(__name__)

ONCOTREE = "OncoTree"  # coding scheme designator of the predicted cancer types
ONCOTREE_URL = "https://oncotree.mskcc.org"
MANUFACTURER = "clinicmm"
SERIES_NUMBER = 9900  # high, so the SR series sorts after the acquired series in a viewer
SERIES_DESCRIPTION = "clinicmm cancer type prediction"
SCORED = "scored"  # the predictions' status of a patient that has probabilities
OUT_COLUMNS = ("patient_id", "sr_path", "status", "reason")
# Type 1 (must have a value) and type 2 (must be present, may be empty) attributes the SR copies from a source.
REQUIRED_VALUE = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
REQUIRED_PRESENT = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "AccessionNumber", "StudyID")  # fmt: skip
_LO = 64  # longest LO / code meaning value


# --------------------------------------------------------------------------------------------- one SR


def write_prediction_sr(
    source_files: list[str],
    predicted: str,
    probabilities: dict[str, float],
    out_dir: Path,
    model_name: str,
    model_version: str,
    *,
    seed_uid: str | None = None,
) -> Path:
    """Write one patient's prediction as a Comprehensive SR in the source series' study; return its path.

    ``probabilities`` maps every OncoTree class of the model to its probability (``predicted`` included).
    With ``seed_uid`` the new Series / SOP Instance UIDs are hashed from it (reproducible); otherwise random.
    The file is ``out_dir/<SOPInstanceUID>.dcm``. Raises ``InputError`` naming the source file when a header is
    unreadable or lacks an attribute the SR copies, or when the files span several studies.
    """
    import highdicom as hd

    probs = _check_probabilities(predicted, probabilities)
    evidence = _read_sources(source_files)
    series_uid, sop_uid = _new_uids(seed_uid)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=_content(predicted, probs, model_name, model_version),
        series_instance_uid=series_uid, series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION, manufacturer_model_name=model_name[:_LO],
        software_versions=_software_version(), coding_schemes=[_oncotree_scheme()],
    )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{sop_uid}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def _check_probabilities(predicted: str, probabilities: Mapping[str, float]) -> dict[str, float]:
    """The probabilities as floats; the predicted class must be among them and each value in [0, 1]."""
    probs = {str(code): _float(p) for code, p in probabilities.items()}
    if predicted not in probs:
        raise InputError(
            f"predicted class {predicted!r} has no probability (classes: {', '.join(probs) or 'none'}); "
            f"the predictions need a prob_{predicted} column"
        )
    bad = [code for code, p in probs.items() if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise InputError(f"probability of {', '.join(bad)} is not a number in [0, 1]; check the prob_ columns")
    return probs


def _float(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_sources(source_files: Sequence[str]) -> list[pydicom.Dataset]:
    """The source headers (no pixels), checked to hold what the SR copies and to come from one study."""
    if not source_files:
        raise InputError("no source DICOM files given: an SR must reference the series it was predicted from")
    datasets = [_read_header(str(f)) for f in source_files]
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) > 1:
        raise InputError(
            f"{source_files[0]}: the source files belong to {len(studies)} studies "
            f"({tag_name('StudyInstanceUID')}); pass the files of one series"
        )
    return datasets


def _read_header(path: str) -> pydicom.Dataset:
    """One source header; ``InputError`` naming the file and every missing attribute."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable header becomes one message naming the file
        raise InputError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc}); re-export it") from None
    missing = [k for k in REQUIRED_VALUE if str(ds.get(k, "") or "").strip() == ""]
    missing += [k for k in REQUIRED_PRESENT if k not in ds]
    if missing:
        raise InputError(
            f"{path}: DICOM header lacks {', '.join(tag_name(k) for k in missing)}, needed to file the prediction "
            "SR into the patient's study; the DICOM export must include the patient and study attributes "
            "(type 2 ones may be empty)"
        )
    return ds


def _new_uids(seed_uid: str | None) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID): hashed from ``seed_uid`` when given, else fresh random ones."""
    import highdicom as hd

    if seed_uid is None:
        return str(hd.UID()), str(hd.UID())
    return tuple(str(generate_uid(entropy_srcs=["clinicmm-sr", str(seed_uid), part])) for part in ("series", "sop"))


def _software_version() -> str:
    from clinicmm import __version__

    return f"clinicmm {__version__}"


def _oncotree_scheme():  # -> highdicom.coding_schemes.CodingSchemeIdentificationItem
    """Declares the non-DICOM OncoTree scheme the predicted codes use."""
    from highdicom.coding_schemes import CodingSchemeIdentificationItem, CodingSchemeResourceItem

    return CodingSchemeIdentificationItem(
        designator=ONCOTREE, name="OncoTree", responsible_organization="Memorial Sloan Kettering Cancer Center",
        resources=[CodingSchemeResourceItem(url=ONCOTREE_URL, url_type="DOC")],
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- content


def _content(predicted: str, probs: dict[str, float], model_name: str, model_version: str):
    """The root CONTAINER of the document (see the module docstring for the tree)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    root = hd.sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport, is_content_continuous=False)
    english = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
    language = hd.sr.LanguageOfContentItemAndDescendants(english)
    section = _impressions(predicted, probs, model_name, model_version)
    items = [*language, *_observer(model_name, model_version), section]
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def _observer(model_name: str, model_version: str) -> list:
    """Observation context: a device observer whose UID is stable for one model name and version."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(generate_uid(entropy_srcs=["clinicmm-model", model_name, model_version])),
        name=model_name[:_LO], manufacturer_name=MANUFACTURER, model_name=f"{model_name} {model_version}"[:_LO],
    )  # fmt: skip
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    return list(hd.sr.ObservationContext(observer_device_context=observer))


def _impressions(predicted: str, probs: dict[str, float], model_name: str, model_version: str):
    """The Impressions section: algorithm identification, the predicted type, every other type, a comment."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    section = hd.sr.ContainerContentItem(
        name=codes.LN.Impressions, is_content_continuous=False, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    algorithm = hd.sr.AlgorithmIdentification(name=model_name, version=str(model_version), manufacturer=MANUFACTURER)
    others = sorted((c for c in probs if c != predicted), key=lambda c: (-probs[c], c))
    coded = [_coded_class(codes.DCM.Impression, predicted, probs[predicted])]
    coded += [_coded_class(codes.DCM.DifferentialDiagnosisImpression, c, probs[c]) for c in others]
    comment = hd.sr.TextContentItem(
        name=codes.DCM.Comment, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        value=f"Automated cancer type prediction by the clinicmm model {model_name} version {model_version}, "
        "with a probability for each cancer type the model knows (OncoTree codes). Not verified by a physician.",
    )  # fmt: skip
    section.ContentSequence = hd.sr.ContentSequence([*algorithm, *coded, comment])
    return section


def _coded_class(name, code: str, probability: float):
    """CODE item naming one OncoTree class, with its probability as a HAS PROPERTIES NUM item."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    item = hd.sr.CodeContentItem(
        name=name, value=oncotree_concept(code), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    num = hd.sr.NumContentItem(
        name=codes.DCM.Probability, value=probability, unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
    )  # fmt: skip
    item.ContentSequence = hd.sr.ContentSequence([num])
    return item


def oncotree_concept(code: str):  # -> highdicom.sr.CodedConcept
    """The coded concept of an OncoTree code; its meaning is the knowledge graph's name, or the code."""
    import highdicom as hd

    return hd.sr.CodedConcept(value=code, scheme_designator=ONCOTREE, meaning=_cancer_title(code)[:_LO])


@functools.lru_cache(maxsize=256)
def _cancer_title(code: str) -> str:
    return _knowledge_graph().title(Node.CANCER, code)


@functools.lru_cache(maxsize=1)
def _knowledge_graph():  # -> KnowledgeGraph
    from clinicmm.knowledge.graph import KnowledgeGraph

    return KnowledgeGraph.default()


# -------------------------------------------------------------------------------------------- a batch


def write_sr_for_predictions(
    predictions: pd.DataFrame,
    series_index: pd.DataFrame,
    out_dir: Path,
    model_name: str,
    model_version: str,
) -> pd.DataFrame:
    """Write an SR for every scored patient with an ``ok`` series in ``series_index`` (``index_dicom``'s table).

    Returns one row per predictions row: patient_id, sr_path ('' when none was written), status ('ok' /
    'skipped') and reason -- a patient that was not scored, has no usable series or whose headers cannot make
    an SR is listed with why, and the others are still written.
    """
    for column in ("patient_id", "predicted"):
        if column not in predictions.columns:
            raise InputError(f"predictions table: no column {column!r}; pass the CSV written by 'clinicmm predict'")
    classes = [c[len("prob_") :] for c in predictions.columns if str(c).startswith("prob_")]
    series = _ok_series(series_index)
    rows = [
        _one_patient(row, classes, series, Path(out_dir), model_name, model_version)
        for _, row in predictions.iterrows()
    ]
    result = pd.DataFrame(rows, columns=list(OUT_COLUMNS))
    n_ok = int((result["status"] == Status.OK.value).sum())
    log.info("wrote %d DICOM SR file(s) to %s; %d patient(s) skipped", n_ok, out_dir, len(result) - n_ok)
    return result


def _ok_series(series_index: pd.DataFrame) -> dict[str, list[str]]:
    """Patient id -> the files of the patient's ``ok`` series (the first one, if an index holds several)."""
    for column in (Col.PATIENT, Col.FILES, Col.STATUS):
        if str(column) not in series_index.columns:
            raise InputError(f"DICOM series index: no column {str(column)!r}; pass the table index_dicom returns")
    found: dict[str, list[str]] = {}
    ok = series_index[series_index[str(Col.STATUS)] == Status.OK.value]
    for pid, files in zip(ok[str(Col.PATIENT)], ok[str(Col.FILES)]):
        found.setdefault(str(pid), _file_list(files))
    return found


def _file_list(files: object) -> list[str]:
    """The ``files`` cell as a list: a list, a numpy array (from Parquet) or a JSON list (from CSV)."""
    if isinstance(files, str):
        files = json.loads(files) if files.strip().startswith("[") else [files]
    if isinstance(files, np.ndarray):
        files = files.tolist()
    return [str(f) for f in files]


def _one_patient(row: pd.Series, classes: list[str], series: dict[str, list[str]], out_dir: Path,
                 model_name: str, model_version: str) -> dict:  # fmt: skip
    """The result row of one predictions row, writing its SR when it can."""
    pid = str(row["patient_id"])
    status = str(row.get("status", SCORED) or SCORED)
    predicted = row.get("predicted")
    if status != SCORED or not isinstance(predicted, str) or not predicted:
        why = str(row.get("reason", "") or "").strip()
        return _result(pid, f"not scored{': ' + why if why else ''}; no prediction to report")
    if pid not in series:
        return _result(pid, "no usable image series in the DICOM index (no 'ok' row); the SR must reference "
                            "the images it belongs to, so none was written")  # fmt: skip
    probs = {c: row[f"prob_{c}"] for c in classes}
    try:
        path = write_prediction_sr(series[pid], predicted, probs, out_dir, model_name, model_version)
    except InputError as exc:
        return _result(pid, str(exc))
    return {"patient_id": pid, "sr_path": str(path), "status": Status.OK.value, "reason": ""}


def _result(pid: str, reason: str) -> dict:
    return {"patient_id": pid, "sr_path": "", "status": Status.SKIPPED.value, "reason": reason}
