"""``io.notes.decode``'s lenient mode: de-identification must copy a badly encoded note, ingest must name it."""

from __future__ import annotations

import pytest

from clinicmm.errors import InputError
from clinicmm.ingest.notes import decode

UNDETECTABLE = bytes(range(256)) * 3  # not UTF-8, and charset-normalizer finds no encoding that fits


def test_text_no_encoding_fits_is_an_error_naming_the_file_unless_lenient():
    with pytest.raises(InputError, match=r"note\.txt: not valid UTF-8 text \(bad byte at offset 128\)"):
        decode(UNDETECTABLE, "auto", "note.txt")
    text, used = decode(UNDETECTABLE, "auto", "note.txt", lenient=True)
    assert used == "utf-8" and text.replace("\ufffd", "") == bytes(range(128)).decode() * 3  # every high byte replaced


def test_an_explicit_encoding_that_does_not_fit_replaces_bad_bytes_only_when_lenient():
    data = "pT2 \u00e9 N0".encode("utf-8").replace(b"\xc3", b"\xff")
    with pytest.raises(InputError, match=r"cannot be read as utf-8 \(bad byte at offset 4\)"):
        decode(data, "utf-8", "note.txt")
    assert decode(data, "utf-8", "note.txt", lenient=True) == ("pT2 \ufffd\ufffd N0", "utf-8")


def test_lenient_reads_good_text_exactly_as_strict_does():
    for data, encoding in (
        ("\ufeffCaf\u00e9 note".encode(), "auto"),
        ("Caf\u00e9 note".encode("latin-1"), "latin-1"),
        ("Caf\u00e9 note, r\u00e9sum\u00e9 \u00e0 jour, d\u00e9j\u00e0 vu".encode("cp1252"), "auto"),
    ):
        assert decode(data, encoding, "n.txt", lenient=True) == decode(data, encoding, "n.txt")


def test_an_unknown_encoding_name_is_a_config_mistake_even_when_lenient():
    with pytest.raises(InputError, match="cannot be read as latin-9x \\(unknown encoding\\)"):
        decode(b"text", "latin-9x", "note.txt", lenient=True)
