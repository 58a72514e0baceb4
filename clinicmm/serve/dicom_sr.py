"""Send predictions back to the hospital as DICOM Comprehensive SR documents, one per patient.

Each SR joins the patient's source CT study (same StudyInstanceUID; highdicom copies the patient and study
modules from the source headers) in a new series of its own, lists every slice of the series the model read in
CurrentRequestedProcedureEvidenceSequence, and carries a TID 1500 Measurement Report (highdicom's
``MeasurementReport``; the root's ContentTemplateSequence says DCMR 1500)::

    CONTAINER (DCM 126000 "Imaging Measurement Report")              TID 1500, title from CID 7021
      HAS CONCEPT MOD   Language of Content = en-US                    TID 1204
      HAS OBS CONTEXT   Observer Type = Device + device name/model     TID 1002 / 1004: the model wrote it
      HAS CONCEPT MOD   Procedure Reported = e.g. CT unspecified body region   CID 100, from the source modality
      CONTAINS CONTAINER (DCM 111028 "Image Library")                  TID 1600
        CONTAINS CONTAINER "Image Library Group" (modality, frame of reference)
          CONTAINS IMAGE (SCT 260753009 "Source") = SOP Class + SOP Instance UID   one per slice the model read
      CONTAINS CONTAINER (DCM 126010 "Imaging Measurements")
        CONTAINS CONTAINER (DCM 125007 "Measurement Group")            TID 1501
          HAS OBS CONTEXT  Tracking Identifier / Tracking Unique Identifier
          CONTAINS CODE    (DCM 121071 "Finding") = OncoTree <predicted>
          HAS CONCEPT MOD  Algorithm Name / Algorithm Version          TID 4019
          CONTAINS NUM     (99CLINICMM SHARE-IMAGE | SHARE-NOTE | SHARE-OMICS) = share  [UCUM "1"]   (when known)
          CONTAINS NUM     (99CLINICMM SETSIZE "Conformal prediction set size") = n  [UCUM "{count}"]  (with a set)
          CONTAINS CODE    (DCM 121073 "Impression") = OncoTree <predicted>
            HAS PROPERTIES NUM (DCM 122157 "Probability") = p  [UCUM "1"]
          CONTAINS CODE    (DCM 111023 "Differential Diagnosis/Impression") = OncoTree <other>   (each class,
            HAS PROPERTIES NUM (DCM 122157 "Probability") = p                                    by probability)
          CONTAINS CODE    (99CLINICMM SETMEMBER "Conformal prediction set member") = OncoTree <type>  (most
                                                                                       probable first)
          CONTAINS CODE    (99CLINICMM DECISION "Automated decision") = 99CLINICMM PREDICT "predict" |
                                                                        ABSTAIN "abstain: refer for review"
          CONTAINS TEXT    (DCM 121106 "Comment") = "automated result, not verified by a physician ..."

DICOM has no codes for a conformal prediction set, an abstention or a modality's share of a prediction, so
those concepts come from the private coding scheme ``99CLINICMM`` (PS3.16 8.2: designators starting with "99"
are local); it and the non-DICOM OncoTree scheme of the cancer types are declared in the
CodingSchemeIdentificationSequence (PS3.3 C.12.1.1.2). Beyond TID 1501, the class CODE items carry their
probability as a HAS PROPERTIES child, and the group a comment. The SR is PRELIMINARY and UNVERIFIED: a
physician signs it off.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
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
LOCAL = "99CLINICMM"  # private coding scheme of the concepts DICOM has no code for (set, decision, shares)
SET_MEMBER = ("SETMEMBER", "Conformal prediction set member")
SET_SIZE = ("SETSIZE", "Conformal prediction set size")
DECISION = ("DECISION", "Automated decision")
DECISIONS = {"predict": ("PREDICT", "predict"), "abstain: refer for review": ("ABSTAIN", "abstain: refer for review")}
SHARES = {"image": ("SHARE-IMAGE", "Share of the prediction: image"),
          "note": ("SHARE-NOTE", "Share of the prediction: clinical notes"),
          "omics": ("SHARE-OMICS", "Share of the prediction: genomics")}  # fmt: skip
TRACKING_ID = "clinicmm cancer type prediction"
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
    prediction_set: Sequence[str] | None = None,
    decision: str | None = None,
    shares: Mapping[str, float] | None = None,
) -> Path:
    """Write one patient's prediction as a Comprehensive SR (TID 1500) in the source series' study; return its path.

    ``probabilities`` maps every OncoTree class of the model to its probability (``predicted`` included);
    ``prediction_set`` is the conformal set (most probable first; None: the model has none), ``decision`` the
    predictions' 'predict' / 'abstain: refer for review', ``shares`` each modality's share of the prediction
    (image, note, omics; those not given are left out). ``source_files`` are the slices the model read: each is
    referenced in the evidence and in the image library. With ``seed_uid`` the new Series / SOP Instance UIDs are
    hashed from it (reproducible); otherwise random. The file is ``out_dir/<SOPInstanceUID>.dcm``. Raises
    ``InputError`` naming the source file when a header is unreadable or lacks an attribute the SR copies, or when
    the files span several studies, and naming the value when the set, decision or a share is not one.
    """
    import highdicom as hd

    probs = _check_probabilities(predicted, probabilities)
    result = _check_result(probs, prediction_set, decision, shares)
    evidence = _read_sources(source_files)
    series_uid, sop_uid = _new_uids(seed_uid)
    content = _content(predicted, probs, result, evidence, model_name, model_version, sop_uid)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=content,
        series_instance_uid=series_uid, series_number=SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION, manufacturer_model_name=model_name[:_LO],
        software_versions=_software_version(), coding_schemes=[_oncotree_scheme(), _local_scheme()],
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


def _check_result(
    probs: dict[str, float],
    prediction_set: Sequence[str] | None,
    decision: str | None,
    shares: Mapping[str, float] | None,
) -> dict:
    """The conformal set, decision and modality shares, checked: set members are classes of the model, the
    decision one of :data:`DECISIONS`, each share a number in [0, 1] of a known modality."""
    members = [str(c) for c in prediction_set] if prediction_set is not None else None
    unknown = [c for c in members or [] if c not in probs]
    if unknown:
        raise InputError(
            f"prediction_set: {', '.join(unknown)} not among the model's classes ({', '.join(probs)}); "
            "pass the set from the same predictions row"
        )
    if decision not in (None, "", *DECISIONS):
        raise InputError(f"decision {decision!r} is not one of {', '.join(map(repr, DECISIONS))}; check the column")
    checked = {}
    for modality, share in (shares or {}).items():
        if modality not in SHARES:
            raise InputError(f"modality share {modality!r}: not one of {', '.join(SHARES)}; check the share_ columns")
        value = _float(share)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InputError(f"share_{modality} = {share!r} is not a number in [0, 1]; check the share_ columns")
        checked[modality] = value
    return {"set": members, "decision": decision or None, "shares": checked}


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


def _local_scheme():  # -> highdicom.coding_schemes.CodingSchemeIdentificationItem
    """Declares the private scheme of the set, decision and share concepts."""
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(
        designator=LOCAL, name="clinicmm prediction concepts", responsible_organization=MANUFACTURER
    )


def _local(code: tuple[str, str]):  # -> highdicom.sr.CodedConcept
    import highdicom as hd

    return hd.sr.CodedConcept(value=code[0], scheme_designator=LOCAL, meaning=code[1])


def _oncotree_scheme():  # -> highdicom.coding_schemes.CodingSchemeIdentificationItem
    """Declares the non-DICOM OncoTree scheme the predicted codes use."""
    from highdicom.coding_schemes import CodingSchemeIdentificationItem, CodingSchemeResourceItem

    return CodingSchemeIdentificationItem(
        designator=ONCOTREE, name="OncoTree", responsible_organization="Memorial Sloan Kettering Cancer Center",
        resources=[CodingSchemeResourceItem(url=ONCOTREE_URL, url_type="DOC")],
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- content


def _content(predicted: str, probs: dict[str, float], result: dict, evidence: list[pydicom.Dataset],
             model_name: str, model_version: str, sop_uid: str):  # fmt: skip
    """The root of the document: a TID 1500 Measurement Report (see the module docstring for the tree)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(generate_uid(entropy_srcs=["clinicmm-tracking", sop_uid])), identifier=TRACKING_ID
        ),
        finding_type=oncotree_concept(predicted),
        algorithm_id=hd.sr.AlgorithmIdentification(name=model_name, version=str(model_version), manufacturer=MANUFACTURER),
        measurements=_measurements(result),
    )  # fmt: skip
    group[0].ContentSequence.extend(_evaluations(predicted, probs, result, model_name, model_version))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model_name, model_version),
        procedure_reported=_procedure(evidence[0]),
        imaging_measurements=[group],
        title=codes.cid7021.ImagingMeasurementReport,
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
        ),
    )
    root = report[0]
    root.ContentSequence.insert(len(root.ContentSequence) - 1, _image_library(evidence))  # before the measurements
    return root


def _observation_context(model_name: str, model_version: str):  # -> highdicom.sr.ObservationContext
    """A device observer whose UID is stable for one model name and version."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(generate_uid(entropy_srcs=["clinicmm-model", model_name, model_version])),
        name=model_name[:_LO], manufacturer_name=MANUFACTURER, model_name=f"{model_name} {model_version}"[:_LO],
    )  # fmt: skip
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    return hd.sr.ObservationContext(observer_device_context=observer)


def _procedure(source: pydicom.Dataset):  # -> pydicom.sr.coding.Code
    """The procedure reported (CID 100) for the source series' modality; a generic imaging procedure otherwise."""
    from pydicom.sr.codedict import codes

    by_modality = {"CT": "CTUnspecifiedBodyRegion", "MR": "MRIUnspecifiedBodyRegion", "PT": "PETUnspecifiedBodyRegion",
                   "NM": "NMUnspecifiedBodyRegion", "CR": "XRUnspecifiedBodyRegion", "DX": "XRUnspecifiedBodyRegion"}  # fmt: skip
    return getattr(codes.cid100, by_modality.get(str(source.get("Modality", "")), "ImagingProcedure"))


def _image_library(evidence: list[pydicom.Dataset]):  # -> highdicom.sr.ContainerContentItem
    """TID 1600 Image Library: one IMAGE item (SOP Class and Instance UID) per slice the model read, with
    highdicom's descriptors (modality, frame of reference, geometry); when a header lacks what the descriptors
    need, the IMAGE items alone."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    try:
        (library,) = hd.sr.ImageLibrary(evidence)
        return library
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # e.g. no ImagePositionPatient
        log.info("dicom-sr: image library without descriptors (%s)", type(exc).__name__)
    library = hd.sr.ContainerContentItem(
        name=codes.DCM.ImageLibrary, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    group = hd.sr.ContainerContentItem(
        name=codes.DCM.ImageLibraryGroup, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    group.ContentSequence = hd.sr.ContentSequence([
        hd.sr.ImageContentItem(
            name=hd.sr.CodedConcept("260753009", "SCT", "Source"), referenced_sop_class_uid=ds.SOPClassUID,
            referenced_sop_instance_uid=ds.SOPInstanceUID, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for ds in evidence
    ])  # fmt: skip
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def _measurements(result: dict) -> list:
    """TID 300 measurements: each modality's share of the prediction and the conformal set's size."""
    import highdicom as hd

    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    found = [hd.sr.Measurement(name=_local(SHARES[m]), value=v, unit=unit) for m, v in result["shares"].items()]
    if result["set"] is not None:
        count = hd.sr.CodedConcept("{count}", "UCUM", "count")
        found.append(hd.sr.Measurement(name=_local(SET_SIZE), value=len(result["set"]), unit=count))
    return found


def _evaluations(predicted: str, probs: dict[str, float], result: dict, model_name: str, model_version: str) -> list:
    """The group's CODE and TEXT items: the predicted type, every other type (each with its probability), the
    conformal set's members, the decision and a comment."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    contains = hd.sr.RelationshipTypeValues.CONTAINS
    others = sorted((c for c in probs if c != predicted), key=lambda c: (-probs[c], c))
    items = [_coded_class(codes.DCM.Impression, predicted, probs[predicted])]
    items += [_coded_class(codes.DCM.DifferentialDiagnosisImpression, c, probs[c]) for c in others]
    items += [
        hd.sr.CodeContentItem(name=_local(SET_MEMBER), value=oncotree_concept(c), relationship_type=contains)
        for c in result["set"] or []
    ]
    if result["decision"] is not None:
        value = _local(DECISIONS[result["decision"]])
        items.append(hd.sr.CodeContentItem(name=_local(DECISION), value=value, relationship_type=contains))
    items.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            relationship_type=contains,
            value=f"Automated cancer type prediction by the clinicmm model {model_name} version {model_version}, "
            "with a probability for each cancer type the model knows (OncoTree codes), the conformal prediction set "
            "and the decision to predict or to refer for review. Not verified by a physician.",
        )  # fmt: skip
    )
    return items


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
    kg = _knowledge_graph()
    return kg.title(Node.CANCER, kg.cancer_node(code) or code)


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
    progress: bool = True,
) -> pd.DataFrame:
    """Write an SR for every scored patient with an ``ok`` series in ``series_index`` (``index_dicom``'s table).

    A tqdm bar on stderr counts the patients (on a terminal; ``progress=False`` hides it): each SR reads every
    header of the patient's series.

    Returns one row per predictions row: patient_id, sr_path ('' when none was written), status ('ok' /
    'skipped') and reason -- a patient that was not scored, has no usable series or whose headers cannot make
    an SR is listed with why, and the others are still written.
    """
    for column in ("patient_id", "predicted"):
        if column not in predictions.columns:
            raise InputError(f"predictions table: no column {column!r}; pass the CSV written by 'clinicmm predict'")
    classes = [c[len("prob_") :] for c in predictions.columns if str(c).startswith("prob_")]
    series = _ok_series(series_index)
    from tqdm.auto import tqdm

    bar = tqdm(
        predictions.iterrows(), total=len(predictions), desc="Writing DICOM SR", unit="patient", file=sys.stderr,
        disable=None if progress else True,
    )  # fmt: skip
    rows = [_one_patient(row, classes, series, Path(out_dir), model_name, model_version) for _, row in bar]
    result = pd.DataFrame(rows, columns=list(OUT_COLUMNS))
    n_ok = int((result["status"] == Status.OK.value).sum())
    log.info("wrote %d DICOM SR file(s) to %s; %d patient(s) skipped", n_ok, out_dir, len(result) - n_ok)
    return result


def _ok_series(series_index: pd.DataFrame) -> dict[str, list[str]]:
    """Patient id -> the files of every ``ok`` series of the patient: all of them are what the model read
    (with ``imaging.series_per_patient`` > 1 it averages their embeddings)."""
    for column in (Col.PATIENT, Col.FILES, Col.STATUS):
        if str(column) not in series_index.columns:
            raise InputError(f"DICOM series index: no column {str(column)!r}; pass the table index_dicom returns")
    found: dict[str, list[str]] = {}
    ok = series_index[series_index[str(Col.STATUS)] == Status.OK.value]
    for pid, files in zip(ok[str(Col.PATIENT)], ok[str(Col.FILES)]):
        found.setdefault(str(pid), []).extend(_file_list(files))
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
        path = write_prediction_sr(
            series[pid], predicted, probs, out_dir, model_name, model_version, **_result_columns(row)
        )
    except InputError as exc:
        return _result(pid, str(exc))
    return {"patient_id": pid, "sr_path": str(path), "status": Status.OK.value, "reason": ""}


def _result_columns(row: pd.Series) -> dict:
    """The conformal set (empty when ``set_size`` is 0), decision and modality shares of a predictions row (each
    left out when absent: a model without a conformal set, a file written before these columns existed)."""
    text = {k: ("" if _missing(row.get(k)) else str(row.get(k)).strip()) for k in ("prediction_set", "decision")}
    shares = {m: row[f"share_{m}"] for m in SHARES if f"share_{m}" in row.index and not _missing(row[f"share_{m}"])}
    size = _float(row.get("set_size"))
    members = text["prediction_set"].split("+") if text["prediction_set"] else ([] if size == 0 else None)
    return {
        "prediction_set": members,
        "decision": text["decision"] or None,
        "shares": shares,
    }


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value)


def _result(pid: str, reason: str) -> dict:
    return {"patient_id": pid, "sr_path": "", "status": Status.SKIPPED.value, "reason": reason}
