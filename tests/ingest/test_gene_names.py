"""Tests of clinicmm.ingest.gene_names: gene names -> current HGNC symbols."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinicmm.errors import ConfigError
from clinicmm.ingest.gene_names import GeneHarmonizer, read_hgnc_table

# A small HGNC custom download (the format of HGNC's "custom downloads" page), including a withdrawn symbol
# merged into another gene, an alias two genes share, and a previous symbol that is another gene's alias.
CUSTOM = """HGNC ID\tApproved symbol\tApproved name\tStatus\tAlias symbols\tPrevious symbols\tEnsembl gene ID\tNCBI Gene ID(supplied by NCBI)
HGNC:1\tSEPTIN7\tseptin 7\tApproved\tCDC10\tSEPT7\tENSG00000122545\t989
HGNC:2\tKMT2D\tlysine methyltransferase 2D\tApproved\tALR, AAD10\tMLL2, MLL4\tENSG00000167548\t8085
HGNC:3\tKMT2B\tlysine methyltransferase 2B\tApproved\tMLL4, AAD10\tMLL1B\tENSG00000272333\t9757
HGNC:4\tTP53\ttumor protein p53\tApproved\tp53, LFS1\t\tENSG00000141510\t7157
HGNC:5\tOLDX\tsymbol withdrawn, see [HGNC:4](/data/gene-symbol-report/#!/hgnc_id/HGNC:4)\tSymbol Withdrawn\t\t\t\t
HGNC:6\tGONE1\tentry withdrawn\tEntry Withdrawn\t\t\t\t
"""


def _complete_set(path: Path) -> Path:
    """The same genes in the layout of HGNC's hgnc_complete_set.txt (lower-case headers, quoted | lists)."""
    rows = [
        ("HGNC:1", "SEPTIN7", "Approved", "CDC10", "SEPT7", "ENSG00000122545", "989"),
        ("HGNC:2", "KMT2D", "Approved", '"ALR|AAD10"', '"MLL2|MLL4"', "ENSG00000167548", "8085"),
        ("HGNC:3", "KMT2B", "Approved", '"MLL4|AAD10"', "MLL1B", "ENSG00000272333", "9757"),
        ("HGNC:4", "TP53", "Approved", '"p53|LFS1"', "", "ENSG00000141510", "7157"),
    ]
    header = "hgnc_id\tsymbol\tstatus\talias_symbol\tprev_symbol\tensembl_gene_id\tentrez_id\n"
    path.write_text(header + "".join("\t".join(r) + "\n" for r in rows))
    return path


@pytest.fixture
def harmonizer(tmp_path: Path) -> GeneHarmonizer:
    (tmp_path / "hgnc.tsv").write_text(CUSTOM)
    return GeneHarmonizer.from_table(tmp_path / "hgnc.tsv")


def test_every_kind_of_name_resolves_to_the_current_symbol(harmonizer: GeneHarmonizer) -> None:
    assert harmonizer.size == 4  # withdrawn entries are not genes of their own
    assert harmonizer.resolve("TP53") == ("TP53", "approved")
    assert harmonizer.resolve("SEPT7") == ("SEPTIN7", "previous")
    assert harmonizer.resolve("CDC10") == ("SEPTIN7", "alias")
    assert harmonizer.resolve("ENSG00000141510.17") == ("TP53", "ensembl")  # version suffix stripped
    assert harmonizer.resolve("7157") == ("TP53", "entrez")
    assert harmonizer.resolve("LOC7157") == ("TP53", "entrez")
    assert harmonizer.resolve("OLDX") == ("TP53", "withdrawn")
    assert harmonizer.resolve("tp53") == ("TP53", "case")


def test_previous_symbol_beats_alias_and_shared_alias_is_ambiguous(harmonizer: GeneHarmonizer) -> None:
    assert harmonizer.resolve("MLL4") == ("KMT2D", "previous")  # previous of KMT2D, alias of KMT2B
    assert harmonizer.resolve("AAD10") == (None, "ambiguous")
    assert harmonizer.resolve("NOT_A_GENE") == (None, "unmapped")
    assert harmonizer.resolve("GONE1") == (None, "unmapped")


def test_symbol_entrez_pairs_use_the_id_and_report_renames(harmonizer: GeneHarmonizer) -> None:
    assert harmonizer.resolve("TP53|7157") == ("TP53", "approved")
    assert harmonizer.resolve("SEPT7|989") == ("SEPTIN7", "entrez")
    assert harmonizer.resolve("?|8085") == ("KMT2D", "entrez")
    assert harmonizer.resolve("?|424242") == (None, "unmapped")


def test_harmonize_keeps_the_column_spelled_as_the_symbol(harmonizer: GeneHarmonizer) -> None:
    result = harmonizer.harmonize(["SEPT7", "p53", "TP53", "MYSTERY", "ENSG00000122545"])
    assert result.names == ["SEPTIN7", "TP53", "TP53", "MYSTERY", "SEPTIN7"]
    assert result.keep == [0, 2, 3]  # TP53 as spelled wins over its alias p53; SEPT7 came first
    assert sorted(result.duplicates) == [("ENSG00000122545", "SEPTIN7", "SEPT7"), ("p53", "TP53", "TP53")]
    counts = result.counts()
    assert counts["genes"] == 5 and counts["kept"] == 3 and counts["duplicates"] == 2
    assert (counts["approved"], counts["previous"], counts["alias"], counts["ensembl"], counts["unmapped"]) == (
        1,
        1,
        1,
        1,
        1,
    )


def test_complete_set_and_custom_download_agree(tmp_path: Path, harmonizer: GeneHarmonizer) -> None:
    other = GeneHarmonizer.from_table(_complete_set(tmp_path / "hgnc_complete_set.txt"))
    names = ["SEPT7", "CDC10", "MLL4", "AAD10", "ENSG00000272333", "9757", "TP53|7157", "p53"]
    assert [other.resolve(n) for n in names] == [harmonizer.resolve(n) for n in names]


def test_a_table_that_is_not_hgnc_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "genes.tsv"
    path.write_text("gene\tname\nTP53\tp53\n")
    with pytest.raises(ConfigError, match=r"genes\.tsv.*'symbol'.*'Approved symbol'.*genomics\.genes\.hgnc_table"):
        read_hgnc_table(path)


def test_shipped_table_resolves_well_known_renames() -> None:
    shipped = GeneHarmonizer.shipped()
    assert shipped.size > 40_000
    assert shipped.resolve("ENSG00000141510.16")[0] == "TP53"
    assert shipped.resolve("SEPT7")[0] == shipped.resolve("SEPTIN7")[0] == "SEPTIN7"
    assert shipped.resolve("HER2") == ("ERBB2", "alias")
    assert shipped.resolve("MLL2") == ("KMT2D", "previous")
