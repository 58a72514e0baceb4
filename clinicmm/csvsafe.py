"""CSV files that are safe to open in a spreadsheet: no cell starts a formula.

A text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a line feed is read by Excel,
LibreOffice or Google Sheets as a formula (``=HYPERLINK(...)``, ``@SUM(...)``, ``-2+3+cmd|...``): a patient id or a
label taken from user data could run one on the reader's machine. As OWASP recommends, such cells get a leading
single quote, which spreadsheets show as text. Numbers are left alone (a negative number stays a number, in a
numeric column or as text such as ``-0.5``), and so is everything else.

Every CSV clinicmm writes goes through :func:`write_csv` (or :func:`csv_text` for an in-memory copy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def neutralise(value: object) -> object:
    """``value`` with a leading ``'`` when it is text a spreadsheet would read as a formula; else unchanged."""
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    if _NUMBER.fullmatch(value):
        return value  # "-0.5", "+3": a number, not a formula
    return "'" + value


def _text_like(series: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
        or pd.api.types.is_timedelta64_dtype(series)
    )


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, column names and index labels cannot start a formula."""
    out = frame.copy()
    for i, column in enumerate(out.columns):
        series = out.iloc[:, i]
        if _text_like(series):
            out.isetitem(i, series.map(neutralise, na_action="ignore"))
    out.columns = [neutralise(c) for c in out.columns]
    if _text_like(out.index.to_series()) and not isinstance(out.index, pd.MultiIndex):
        out.index = out.index.map(neutralise)
    return out


def csv_text(frame: pd.DataFrame, **kwargs) -> str:
    """``frame.to_csv(**kwargs)`` as a string, formula-safe."""
    return safe_frame(frame).to_csv(**kwargs)


def write_csv(frame: pd.DataFrame, path: Path | str, **kwargs) -> Path:
    """Write ``frame`` to ``path`` formula-safe (``kwargs`` as for ``DataFrame.to_csv``), atomically: a reader never
    sees half a file, and a failed write leaves the previous file as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        safe_frame(frame).to_csv(tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
