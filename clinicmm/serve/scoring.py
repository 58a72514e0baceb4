"""Score patients given as a DataFrame — the interface of the registered MLflow model.

Input columns (all strings; every one but ``patient_id`` optional, empty meaning 'not available'):

| column | value |
| --- | --- |
| patient_id | the patient's id (only echoed back, never logged) |
| dicom_files | a JSON list of the series' DICOM file paths, or a folder holding one series |
| body_part | BodyPartExamined; default: read from the first DICOM file |
| notes | a JSON list of note texts, or else one note as plain text |
| notes_file | a text file holding one note (UTF-8, else its detected encoding), or a folder of ``.txt`` notes (added to ``notes``) |
| expression | a JSON object ``{gene: value}`` in the unit the model was trained on |
| expression_file | a CSV/TSV with gene columns and one data row (a leading sample-id column is ignored) |
| mutations | a JSON list of non-silent mutated gene symbols |

Output: one row per input row: patient_id, predicted, ``prob_<class>`` for every class (calibrated with the
model's temperature), the top-3 differential (top1, top1_prob … top3_prob), the conformal prediction set
(prediction_set, '+'-joined, most probable first, and set_size), decision ('predict' or 'abstain: refer for
review'), modalities (the ones used, '+'-joined), status ('scored' or 'not scored') and reason; then the
explanation (:mod:`clinicmm.serve.explain`): share_image, share_note, share_omics, top_genes and top_concepts
('name:score|…', leave-one-link-out, graph models only), top_path (the highest-weight graph path from the patient
to the predicted cancer-type node) and ``explanation`` (all of it as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.keys import MODALITIES, Col

INPUT_COLUMNS = (
    "patient_id",
    "dicom_files",
    "body_part",
    "notes",
    "notes_file",
    "expression",
    "expression_file",
    "mutations",
)


def _cell(row: pd.Series, key: str) -> str:
    value = row.get(key, "")
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _json(text: str, expect: type, column: str, pid: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"column {column!r}: not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, expect):
        raise ValueError(f"column {column!r}: expected a JSON {expect.__name__} (got {type(value).__name__})")
    return value


def _notes(text: str) -> list[str]:
    """A JSON list of note texts, or else the cell itself as one plain-text note (which may start with '[')."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return [text]
        if isinstance(value, list) and all(isinstance(t, str) for t in value):
            return value
    return [text]


def _series_files(text: str) -> list[str] | list[list[str]]:
    """A JSON list of files (one series), a JSON list of such lists (several, embeddings averaged) or a folder."""
    if text.startswith("["):
        from clinicmm.ingest.cohort import series_list

        value = _json(text, list, "dicom_files", "")
        return value if not value else series_list(value) if isinstance(value[0], list) else [str(f) for f in value]
    folder = Path(text)
    if not folder.is_dir():
        raise ValueError(f"column 'dicom_files': {folder} is neither a JSON list of files nor a folder")
    from clinicmm.config import ImagingSpec
    from clinicmm.ingest.dicom import index_dicom

    index = index_dicom(ImagingSpec(root=folder), folder)
    ok = index[index[Col.STATUS] == "ok"]
    if ok.empty:
        reasons = "; ".join(index[Col.REASON].astype(str).head(3))
        raise ValueError(f"column 'dicom_files': no usable series in {folder} ({reasons})")
    return [str(f) for f in ok.iloc[0][Col.FILES]]


def _body_part(files: list[str]) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(files[0], stop_before_pixels=True).get("BodyPartExamined", "")).upper()
    except Exception:  # unreadable header: the encoder records the real reason
        return ""


def _notes_file(text: str) -> list[str]:
    """The notes in a text file, or in every .txt file of a folder (sorted by name)."""
    path = Path(text)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise ValueError(f"column 'notes_file': {path} is neither a text file nor a folder of .txt files")
    from clinicmm.errors import InputError
    from clinicmm.ingest.notes import decode

    try:  # UTF-8, else the detected encoding (as the notes reader does)
        return [decode(f.read_bytes(), "auto", str(f))[0] for f in files]
    except InputError as exc:
        raise ValueError(f"column 'notes_file': {exc}") from None


def _expression_file(text: str) -> dict[str, float]:
    """One patient's expression from a table with gene columns and a single data row (a first text column,
    such as a sample id, is ignored)."""
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"column 'expression_file': {path} does not exist")
    table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t")
    if len(table) != 1:
        raise ValueError(f"column 'expression_file': {path} has {len(table)} data rows; expected exactly one")
    row = table.iloc[0]
    values = pd.to_numeric(row, errors="coerce")
    if pd.isna(values.iloc[0]) and not pd.isna(row.iloc[0]):
        values = values.iloc[1:]
    bad = values[values.isna() & row[values.index].notna()]
    if len(bad):
        raise ValueError(f"column 'expression_file': {path}, column {bad.index[0]!r} is not a number")
    return {str(g): float(v) for g, v in values.dropna().items()}


def _parse_row(row: pd.Series, pid: str) -> dict:
    """One row's raw inputs; raises ValueError naming the column for anything unusable."""
    out: dict = {"files": None, "body": "", "texts": [], "expr": None, "mut": []}
    if d := _cell(row, "dicom_files"):
        out["files"] = _series_files(d)
        out["body"] = _cell(row, "body_part").upper() or _body_part(out["files"])
    if n := _cell(row, "notes"):
        out["texts"] += _notes(n)
    if nf := _cell(row, "notes_file"):
        out["texts"] += _notes_file(nf)
    if e := _cell(row, "expression"):
        out["expr"] = {str(k): float(v) for k, v in _json(e, dict, "expression", pid).items()}
    elif ef := _cell(row, "expression_file"):
        out["expr"] = _expression_file(ef)
    if m := _cell(row, "mutations"):
        out["mut"] = [(pid, str(g)) for g in _json(m, list, "mutations", pid)]
    return out


def parse_frame(frame: pd.DataFrame) -> dict:
    """Per-row raw inputs, and a reason for each row that cannot be parsed (that row only is skipped)."""
    if "patient_id" not in frame.columns:
        raise ValueError(f"missing column 'patient_id'; expected columns: {', '.join(INPUT_COLUMNS)}")
    parsed = {"patients": [], "series": [], "body_parts": [], "texts": [], "expr": {}, "mut": [], "errors": {}}
    first_row: dict[str, int] = {}
    for i, (_, row) in enumerate(frame.iterrows()):
        pid = _cell(row, "patient_id") or f"row-{i + 1}"
        parsed["patients"].append(pid)
        try:
            if pid in first_row:
                raise ValueError(
                    f"patient_id appears again (first in row {first_row[pid] + 1}); give each patient one row"
                )
            first_row[pid] = i
            one = _parse_row(row, pid)
        except (ValueError, TypeError, OSError) as exc:
            parsed["errors"][i] = str(exc)
            one = {"files": None, "body": "", "texts": [], "expr": None, "mut": []}
        parsed["series"].append(one["files"])
        parsed["body_parts"].append(one["body"])
        parsed["texts"].append(one["texts"])
        if one["expr"] is not None:
            parsed["expr"][pid] = one["expr"]
        parsed["mut"] += one["mut"]
    return parsed


def _omics_tables(parsed: dict) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    expr = pd.DataFrame.from_dict(parsed["expr"], orient="index") if parsed["expr"] else None
    if expr is not None:
        expr.index.name = Col.PATIENT.value
    mut = (
        pd.DataFrame(
            [
                {"patient_id": p, "sample_id": p, "gene": g, "variant_class": "", "non_silent": True, "status": "ok"}
                for p, g in parsed["mut"]
            ]
        )
        if parsed["mut"]
        else None
    )
    return expr, mut


def encode_frame(parsed: dict, featurizer):
    """EncodedCohort of the parsed rows (absent modality: None; failures carry the row)."""
    patients = parsed["patients"]
    expr, mut = _omics_tables(parsed)
    has_omics = np.array([p in parsed["expr"] or any(q == p for q, _ in parsed["mut"]) for p in patients])
    encoded = featurizer.encode(patients, parsed["series"], parsed["body_parts"], parsed["texts"], expr, mut, has_omics)
    return encoded, len(patients)


def score(bundle, model, featurizer, frame: pd.DataFrame) -> pd.DataFrame:
    """Predict every row of ``frame`` (see the module docstring for the columns)."""
    from clinicmm.training.data import to_evidence
    from clinicmm.training.fit import predict_proba

    parsed = parse_frame(frame)
    encoded, n = encode_frame(parsed, featurizer)
    for m in MODALITIES:  # absent modality: NaN block of the trained width
        if encoded.vectors[m.value] is None:
            encoded.vectors[m.value] = np.full((n, bundle.dims[m.value]), np.nan, dtype=np.float32)
    present = np.stack([encoded.has(m.value) for m in MODALITIES], axis=1)
    rows = [i for i in range(n) if present[i].any() and i not in parsed["errors"]]
    items = to_evidence(encoded, rows, [-1] * len(rows), bundle.knowledge, bundle.scaler)
    hetero = bundle.knowledge.to_hetero() if items else None  # one graph for the predictions and their explanations
    probs = predict_proba(model, items, hetero, bundle.dims) if items else np.zeros((0, len(bundle.classes)))
    result = _result_frame(
        parsed, encoded, bundle.classes, rows, bundle.calibration.apply(probs), present, bundle.calibration
    )
    from clinicmm.serve.explain import add_explanations  # modality shares, top genes / concepts, graph paths

    return add_explanations(result, model, items, rows, bundle, hetero)


def _result_frame(parsed, encoded, classes, rows, probs, present, calibration=None) -> pd.DataFrame:
    from clinicmm.training.calibration import Calibration, empty_columns

    failed = {}
    for f in encoded.failures:
        failed.setdefault(f["row"], []).append(f"{f['modality']}: {f['reason']}")
    out = []
    scored = dict(zip(rows, probs))
    trust = dict(zip(rows, (calibration or Calibration()).columns(probs, classes)))
    for i, pid in enumerate(parsed["patients"]):
        rec = {"patient_id": pid, "predicted": ""} | {f"prob_{c}": np.nan for c in classes} | empty_columns()
        used = [m.value for j, m in enumerate(MODALITIES) if present[i, j]]
        rec["modalities"] = "+".join(used)
        if i in scored:
            rec["predicted"] = classes[int(np.argmax(scored[i]))]
            rec.update({f"prob_{c}": float(p) for c, p in zip(classes, scored[i])} | trust[i])
            rec["status"], rec["reason"] = "scored", "; ".join(failed.get(i, []))
        else:
            reason = (
                parsed["errors"].get(i) or "; ".join(failed.get(i, [])) or "no usable image, note or genomics input"
            )
            rec["status"], rec["reason"] = "not scored", reason
        out.append(rec)
    return pd.DataFrame(out)
