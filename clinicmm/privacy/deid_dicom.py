"""DICOM de-identification: the PS3.15 Basic Application Level Confidentiality Profile, with pydicom.

Why not a library: dicognito (installed) replaces names, ids, UIDs and dates, but it neither removes private
tags nor applies the profile's table (descriptions, comments, addresses ... stay). So the table itself
(``data/ps3.15_basic_profile.txt``, Table E.1-1) drives pydicom here, plus two options of the standard:

* Retain Longitudinal Temporal Information with Modified Dates: every listed date moves by the patient's keyed
  day shift (:func:`clinicmm.privacy.pseudonym.day_shift`), the same shift as their notes, so intervals hold;
* UIDs (action U, and UIDs inside cleaned sequences) become ``2.25.<keyed hash>``: the same input UID gives the
  same output UID in every file and every run with the same key, so series and studies still group.

Patient ID and Patient's Name get the keyed pseudonym (a dummy value the profile allows for Z), so the modalities
of a patient still link. Private tags are removed. A file whose BurnedInAnnotation is YES is refused: the
profile cannot clean pixels.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from clinicmm.privacy.pseudonym import day_shift, pseudonym, remap_uid

PROFILE_FILE = Path(__file__).with_name("data") / "ps3.15_basic_profile.txt"
METHOD = "PS3.15 Basic Profile; Modified Dates Option (clinicmm)"  # LO: at most 64 characters
DUMMY = "REMOVED"
BIRTH_DATE = 0x00100030
PN_TAGS = ("PatientName", "PatientID")
TEXT_VRS = ("AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR")
FREE_TEXT_VRS = ("LT", "ST", "UT", "UC")
NUMBER_VRS = ("DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT")


@functools.cache
def profile() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """(action by tag, [(mask, value, action)] for repeating groups such as overlays 60xx)."""
    exact, masked = {}, []
    for line in PROFILE_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        action, *tags = line.split()
        for tag in tags:
            if "x" in tag:  # a repeating group: 'x' digits match anything
                masked.append(
                    (int("".join("0" if c == "x" else "F" for c in tag), 16), int(tag.replace("x", "0"), 16), action)
                )
            else:
                exact[int(tag, 16)] = action
    return exact, masked


def action_for(tag: int) -> str | None:
    exact, masked = profile()
    if tag in exact:
        return exact[tag]
    for mask, value, action in masked:
        if tag & mask == value:
            return action
    return None


def _shift(value: str, days: int, vr: str) -> str:
    """A DA (YYYYMMDD) or the date part of a DT moved by ``days``; unparseable values become empty."""
    import datetime as dt

    text = str(value).strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return day.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


class Cleaner:
    """Applies the profile to one dataset (in place) for one patient; ``counts`` tallies what was done."""

    def __init__(self, key: bytes, patient_id: str, patient_tag: str = "PatientID"):
        self.key, self.days, self.patient_tag = key, day_shift(patient_id, key), patient_tag
        self.pseudonym = pseudonym(patient_id, key)
        self.counts: Counter = Counter()

    def clean(self, ds: Dataset) -> Dataset:
        self.counts["private_removed"] += sum(1 for e in ds.iterall() if e.tag.is_private)
        ds.remove_private_tags()
        self._walk(ds)
        ds.PatientID, ds.PatientName = self.pseudonym, self.pseudonym
        setattr(ds, self.patient_tag, self.pseudonym)  # the tag the dataset links patients by keeps linking them
        if "MediaStorageSOPInstanceUID" in getattr(ds, "file_meta", {}):
            ds.file_meta.MediaStorageSOPInstanceUID = remap_uid(ds.file_meta.MediaStorageSOPInstanceUID, self.key)
        self._mark(ds)
        return ds

    def _walk(self, ds: Dataset, strict: bool = False) -> None:
        """Apply the table; an unlisted name (PN) is replaced too, and inside a sequence the table replaces
        (``strict``, e.g. an SR's Content Sequence) so is unlisted free text (LT, ST, UT, UC)."""
        for elem in list(ds):
            action = action_for(int(elem.tag))
            if action is None and (elem.VR == "PN" or (strict and elem.VR in FREE_TEXT_VRS)) and elem.value:
                action = "D"
            if action is None:
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._walk(item, strict)
                continue
            self._apply(ds, elem, action)

    def _apply(self, ds: Dataset, elem, action: str) -> None:
        vr = elem.VR
        if vr in ("DA", "DT") and int(elem.tag) != BIRTH_DATE and elem.value:
            elem.value = _each(elem, lambda v: _shift(v, self.days, vr))
            self.counts["dates_shifted"] += 1
        elif vr == "UI" and ("U" in action or action == "D"):
            elem.value = _each(elem, lambda v: remap_uid(v, self.key) if v else v)
            self.counts["uids_remapped"] += 1
        elif vr == "SQ" and ("U" in action or action == "D"):
            for item in elem.value:
                self._walk(item, strict=action == "D")
            self.counts["sequences_cleaned"] += 1
        elif action.startswith("X"):
            del ds[elem.tag]
            self.counts["removed"] += 1
        elif action == "D":
            elem.value = _dummy(vr)
            self.counts["replaced"] += 1
        else:  # Z, Z/D: zero length
            elem.value = Sequence([]) if vr == "SQ" else None
            self.counts["emptied"] += 1

    def _mark(self, ds: Dataset) -> None:
        from pydicom.sr.codedict import codes

        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD
        items = []
        dcm = codes.DCM
        for code in (
            dcm.BasicApplicationConfidentialityProfile,
            dcm.RetainLongitudinalTemporalInformationModifiedDatesOption,
        ):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
                code.value,
                code.scheme_designator,
                code.meaning,
            )
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)


def _each(elem, fn):
    """``fn`` applied to each value of a multi-valued element, or to its one value."""
    return [fn(v) for v in elem.value] if elem.VM > 1 else fn(elem.value)


def _dummy(vr: str):
    if vr in TEXT_VRS:
        return DUMMY if vr not in ("CS", "AS", "AE") else ""
    if vr in NUMBER_VRS:
        return 0
    if vr == "TM":
        return "000000"
    return b"" if vr.startswith("O") or vr == "UN" else None


# --------------------------------------------------------------------------------------- one file


def identifiers(ds: Dataset) -> dict[str, set[str]]:
    """Names (every PN value, split into its parts) and ids (Other Patient IDs, Accession Number) of a header,
    collected before cleaning so the patient's notes can be scrubbed of them."""
    names, ids = set(), set()
    for elem in ds.iterall():
        if elem.VR == "PN" and elem.value:
            for value in elem.value if elem.VM > 1 else [elem.value]:
                names |= {p for p in re.split(r"[\s^=,]+", str(value)) if len(p) >= 2}
    for keyword in ("OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator", "AdmissionID"):
        elem = ds.get(keyword) and ds[keyword]
        if elem:
            ids |= {str(v) for v in (elem.value if elem.VM > 1 else [elem.value]) if len(str(v)) >= 4}
    return {"names": names, "ids": ids}


def deidentify_file(path: Path, key: bytes, patient_tag: str = "PatientID") -> tuple[Dataset | None, dict]:
    """(cleaned dataset or None, report row) for one file; never raises on a bad file."""
    row = {"status": "written", "reason": ""}
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # not DICOM, truncated header ...
        return None, row | {
            "status": "skipped",
            "reason": f"not readable as DICOM ({type(exc).__name__}: {str(exc)[:80]})",
        }
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return None, row | {
            "status": "refused",
            "reason": "BurnedInAnnotation (0028,0301) is YES: identifying text may be "
            "burned into the pixels; mask it first or leave this file out",
        }
    patient = str(ds.get(patient_tag, "") or "").strip()
    if not patient:
        return None, row | {
            "status": "skipped",
            "reason": f"no {patient_tag} in the header: cannot give the file a pseudonym",
        }
    found = identifiers(ds)
    cleaner = Cleaner(key, patient, patient_tag)
    try:
        cleaner.clean(ds)
    except Exception as exc:  # a malformed element the profile cannot handle
        return None, row | {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc)[:120]}"}
    return ds, row | {"patient": patient, "pseudonym": cleaner.pseudonym, **dict(cleaner.counts), "_found": found}
