"""Copy-number segments (``genomics.layers[i].segments: hg19 | hg38``): each cytogenetic band gets the
length-weighted mean of a sample's segments over it, whatever tool wrote the table (GDC, cBioPortal, Firehose,
IGV), and the bands link to the genes inside them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from deid_checks import deidentify_and_compare
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_fuzz_omics_files import _mutate
from test_hostile_trees import in_thread

from clinicmm.config import DatasetSpec, GenomicsEncoderSpec
from clinicmm.encode.genomics import GenomicsPreprocessor
from clinicmm.errors import ClinicmmError, InputError
from clinicmm.ingest.cytobands import GeneLocations
from clinicmm.ingest.genomics import gene_counts, genomics_issues, read_genomics
from clinicmm.ingest.segments import band_means, bands, chromosome_of, segment_columns

HG19_CHR17, HG19_CHR1 = 81_195_210, 249_250_621
HG38_CHR1 = 248_956_422

# cBioPortal / Firehose (hg19): ERBB2's band 17q12 (31.8-38.1 Mb in hg19) half amplified in patient 1
CBIOPORTAL = (
    "ID\tchrom\tloc.start\tloc.end\tnum.mark\tseg.mean\n"
    f"TCGA-AA-0001-01A\t17\t1\t35000000\t100\t0\n"
    f"TCGA-AA-0001-01A\t17\t35000001\t40000000\t50\t2\n"
    f"TCGA-AA-0001-01A\t17\t40000001\t{HG19_CHR17}\t100\t0\n"
    f"TCGA-AA-0001-01A\t23\t1\t155270560\t100\t-0.5\n"
    f"TCGA-AA-0001-10A\t17\t1\t{HG19_CHR17}\t100\t0.7\n"
    f"TCGA-AA-0002-01A\tchr17\t1\t{HG19_CHR17}\t100\t0.1\n"
    f"TCGA-AA-0002-01A\tMT\t1\t16000\t3\t0.3\n"
    f"TCGA-AA-0003-01A\t1\t1\t249240000\t100\t1e9x\n"
    f"TCGA-AA-0003-01A\t17\t1\t{HG19_CHR17}\t100\t0.2\n"
    f"TCGA-AA-0004-01A\t17\t1\t{HG19_CHR17}\t100\tNA\n"
)


def _dataset(tmp_path: Path, layer: dict, **genomics) -> DatasetSpec:
    return DatasetSpec(name="seg", base_dir=tmp_path, genomics={"layers": [layer], **genomics})


def _brute_force(segments: list[tuple[int, int, float]], start: int, end: int) -> float:
    """The band's mean over every covered base pair, one base at a time (segments 0-based, end exclusive)."""
    covered = np.zeros(end - start)
    total = np.zeros(end - start)
    for s, e, v in segments:
        lo, hi = max(s, start), min(e, end)
        if hi > lo:
            covered[lo - start : hi - start] += 1
            total[lo - start : hi - start] += v
    return float(total.sum() / covered.sum()) if covered.sum() else float("nan")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7_000), st.integers(1, 3_000), st.floats(-3, 3, allow_nan=False)),
        min_size=0,
        max_size=6,
    )
)
def test_a_band_is_the_mean_of_its_covered_base_pairs_weighted_by_overlap(raw) -> None:
    """On a toy chromosome of three bands, every band value equals the per-base-pair mean computed one base at a
    time, with overlapping segments each counted; a band no segment touches is missing."""
    from clinicmm.ingest.segments import Bands

    table = Bands("toy", ["1p1", "1p2", "1q1"], {"1": (np.arange(3), np.array([0, 2_000, 5_000]),
                                                        np.array([2_000, 5_000, 9_000]))}, {"1": 9_000})  # fmt: skip
    segments = [(s, min(s + n, 9_000), v) for s, n, v in raw]
    n = len(segments)
    got = band_means(
        np.zeros(n, dtype=np.int64), np.array(["1"] * n, dtype=object), np.array([s for s, _, _ in segments]),
        np.array([e for _, e, _ in segments]), np.array([v for _, _, v in segments]), 1, table,
    )[0]  # fmt: skip
    expected = [_brute_force(segments, s, e) for s, e in ((0, 2_000), (2_000, 5_000), (5_000, 9_000))]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_the_shipped_bands_tile_each_chromosome_of_both_assemblies() -> None:
    """862 bands per assembly, starting at 0, each starting where the last ended, ending at the chromosome's length
    (UCSC: chr1 249,250,621 in hg19, 248,956,422 in hg38); ERBB2's band 17q12 where UCSC puts it."""
    for assembly, chr1 in (("hg19", HG19_CHR1), ("hg38", HG38_CHR1)):
        table = bands(assembly)
        assert len(table.names) == 862 and len(table.by_chromosome) == 24
        for _, starts, ends in table.by_chromosome.values():
            assert starts[0] == 0 and (starts[1:] == ends[:-1]).all() and (ends > starts).all()
        assert table.lengths["1"] == chr1
    assert bands("GRCh37") is bands("hg19")
    q12 = bands("hg19").names.index("17q12")
    index, starts, ends = bands("hg19").by_chromosome["17"]
    assert (starts[index == q12][0], ends[index == q12][0]) == (31_800_000, 38_100_000)
    assert "ERBB2" in GeneLocations.shipped().genes_in("17q12")


@pytest.mark.parametrize(
    ("cell", "name"),
    [("1", "1"), ("chr7", "7"), ("CHRX", "X"), ("x", "X"), ("23", "X"), ("24", "Y"), ("chrY", "Y"), ("MT", None),
     ("chrM", None), ("25", None), ("GL000192.1", None), ("chrUn_gl000220", None), ("", None)],
)  # fmt: skip
def test_chromosomes_are_read_as_every_tool_writes_them(cell: str, name) -> None:
    assert chromosome_of(cell) == name


@pytest.mark.parametrize(
    ("header", "roles"),
    [
        (["GDC_Aliquot", "Chromosome", "Start", "End", "Num_Probes", "Segment_Mean"], (0, 1, 2, 3, 5)),
        (["ID", "chrom", "loc.start", "loc.end", "num.mark", "seg.mean"], (0, 1, 2, 3, 5)),
        (["Sample", "Chromosome", "Start", "End", "Num_Probes", "Segment_Mean"], (0, 1, 2, 3, 5)),
        (["name", "chr", "startpos", "endpos", "markers", "cn_log2"], (0, 1, 2, 3, 5)),  # IGV: first and last
        # GDC's allele-specific (ASCAT) segments: the total copy number, not the minor allele's in the last column
        (
            ["GDC_Aliquot", "Chromosome", "Start", "End", "Copy_Number", "Major_Copy_Number", "Minor_Copy_Number"],
            (0, 1, 2, 3, 4),
        ),
        (["chromosome", "start", "end", "gene", "log2", "depth", "probes", "weight"], (None, 0, 1, 2, 4)),  # CNVkit
        (["Sample", "Chromosome", "Start", "End"], (0, 1, 2, 3, None)),  # no value but a coordinate
        (["sample_id", "gene", "value"], None),
    ],
)
def test_segment_columns_are_found_by_the_names_each_tool_uses(header: list[str], roles) -> None:
    found = segment_columns(header)
    assert (
        None if found is None else tuple(found[r] for r in ("sample", "chromosome", "start", "end", "value"))
    ) == roles


def test_a_cbioportal_segment_table_becomes_band_values_per_patient_linked_to_the_genes_inside(tmp_path: Path) -> None:
    (tmp_path / "cna.seg").write_text(CBIOPORTAL)
    spec = _dataset(tmp_path, {"name": "cnv", "kind": "copy_number", "path": "cna.seg", "segments": "hg19"},
                    patient_id_length=12)  # fmt: skip
    assert spec.genomics.layers[0].features == "cytoband"  # implied by segments
    tables = read_genomics(spec)
    matrix, samples = tables["expression"], tables["samples"]
    # patient 1: 17q12 is 3.2 Mb at 0 and 3.1 Mb at 2 -> 6.2 / 6.3; its normal sample (-10A) is skipped
    assert matrix.loc["TCGA-AA-0001", "cnv:17q12"] == pytest.approx(2 * 3.1 / 6.3)
    assert matrix.loc["TCGA-AA-0001", "cnv:Xp22.33"] == pytest.approx(-0.5)  # chromosome 23 is X
    assert matrix.loc["TCGA-AA-0002", "cnv:17q12"] == pytest.approx(0.1)
    assert np.isnan(matrix.loc["TCGA-AA-0002", "cnv:Xp22.33"])  # no segment there: missing, not 0
    assert sorted(matrix.index) == ["TCGA-AA-0001", "TCGA-AA-0002"]
    reasons = dict(zip(samples["sample_id"], samples["reason"], strict=True))
    assert "normal" in reasons["TCGA-AA-0001-10A"]
    assert "row 8, column 'seg.mean': not a number" in reasons["TCGA-AA-0003-01A"] and "1e9x" not in reasons[
        "TCGA-AA-0003-01A"]  # fmt: skip
    assert "no segment with a value" in reasons["TCGA-AA-0004-01A"]
    issues = genomics_issues(tables)
    assert any("10 segments of 5 samples read as copy-number segments in hg19" in line for line in issues)
    assert any("1 segment(s) on other sequences" in line for line in issues)
    assert any("1 segment(s) without a value (NA)" in line for line in issues)
    counts = gene_counts(tables)["expression"]
    assert counts["cnv_regions"] == counts["cnv_features"] == matrix.shape[1]  # chr17's and chrX's bands (chr1's bad)
    assert matrix.shape[1] == 24 + 40
    pre = GenomicsPreprocessor.from_spec(
        "log", GenomicsEncoderSpec(), layer_units={"cnv": "log"}, region_layers=["cnv"]
    )
    pre.fit(matrix, None)
    links = pre.link_counts({"ERBB2", "TP53", "AR"})
    # every fitted band is a region that stands for its genes (X's bands, measured in one patient, are constant)
    assert links["features_region_cnv"] == links["features"] == 24


def test_a_table_in_the_other_assembly_is_read_and_the_report_says_which_to_set(tmp_path: Path) -> None:
    (tmp_path / "cna.seg").write_text(  # IGV's track line above the header
        "#track name=cn graphType=heatmap\nID\tchrom\tloc.start\tloc.end\tnum.mark\tseg.mean\n"
        f"S1\t1\t1\t{HG19_CHR1 - 100}\t100\t0.3\n"
    )
    issues = genomics_issues(read_genomics(_dataset(tmp_path, {"name": "cnv", "kind": "copy_number",
                                                               "path": "cna.seg", "segments": "hg38"})))  # fmt: skip
    assert any("1 of 1 segments end past their chromosome's end in hg38" in i and "segments: hg19" in i for i in issues)
    quiet = genomics_issues(read_genomics(_dataset(tmp_path, {"name": "cnv", "kind": "copy_number",
                                                              "path": "cna.seg", "segments": "hg19"})))  # fmt: skip
    assert not any("past their chromosome" in i for i in quiet)
    assert any("1 segments of 1 samples read" in i for i in quiet)


def test_a_segment_table_read_as_a_matrix_is_refused_naming_the_key_to_set(tmp_path: Path) -> None:
    (tmp_path / "cna.seg.txt").write_text(CBIOPORTAL)
    layer = {"name": "cnv", "kind": "copy_number", "path": "cna.seg.txt", "unit": "log"}
    with pytest.raises(InputError, match=r"segment table.*set genomics\.layers\[0\]\.segments: hg38 .*hg19"):
        read_genomics(_dataset(tmp_path, layer))
    with pytest.raises(InputError, match="genomics.layers entry with segments"):
        read_genomics(DatasetSpec(name="seg", base_dir=tmp_path, genomics={"expression": {"path": "cna.seg.txt"}}))


def test_a_segment_table_without_a_sample_column_is_refused_naming_what_to_set(tmp_path: Path) -> None:
    (tmp_path / "t.cns").write_text("chromosome\tstart\tend\tgene\tlog2\tdepth\nchr1\t1\t900\tA\t0.2\t30\n")
    (tmp_path / "t.seg").write_bytes((tmp_path / "t.cns").read_bytes())
    layer = {"name": "cnv", "kind": "copy_number", "path": "t.seg", "segments": "hg38"}
    with pytest.raises(InputError, match=r"names no sample column.*sample_column.*sample_sheet"):
        read_genomics(_dataset(tmp_path, layer))
    named = read_genomics(_dataset(tmp_path, layer | {"sample_column": "gene"}))["expression"]
    assert list(named.index) == ["A"] and named.loc["A", "cnv:1p36.33"] == pytest.approx(0.2)


def test_a_layer_with_segments_set_on_a_matrix_is_refused_naming_the_columns_a_segment_table_has(tmp_path) -> None:
    (tmp_path / "expr.tsv").write_text("sample_id\tTP53\nS1\t1.0\n")
    with pytest.raises(InputError, match="names no chromosome, start and end columns.*GDC_Aliquot, Chromosome"):
        read_genomics(
            _dataset(tmp_path, {"name": "cnv", "kind": "copy_number", "path": "expr.tsv", "segments": "hg38"})
        )


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"features": "gene"}, "features must be 'cytoband'"), ({"unit": "counts"}, "set unit: log"),
     ({"feature_map": "m.csv"}, "need no feature_map")],
)  # fmt: skip
def test_a_segment_layer_refuses_settings_that_cannot_hold(tmp_path: Path, extra: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        _dataset(tmp_path, {"name": "cnv", "kind": "copy_number", "path": "a.seg", "segments": "hg38", **extra})


def test_a_gdc_download_of_segment_files_is_read_per_sample_through_its_sample_sheet(tmp_path: Path) -> None:
    """The GDC's per-aliquot files name the aliquot by UUID; the sheet says which sample each file is. A file whose
    row is broken skips its sample only."""
    folder = tmp_path / "dl"
    header = "GDC_Aliquot\tChromosome\tStart\tEnd\tNum_Probes\tSegment_Mean\n"
    files = {
        "a.grch38.seg.v2.txt": header + "1b2c-uuid\tchr17\t1\t39000000\t80\t1.0\n1b2c-uuid\tchr17\t39000001\t83257441\t80\t0\n",
        "b.grch38.seg.v2.txt": header + "9f8e-uuid\tchr17\t1\t83257441\t80\t-0.2\n",
        "c.grch38.seg.v2.txt": header + "7a6b-uuid\tchr17\t1\toops\t80\t0.5\n",
        "d.grch38.seg.v2.txt": header + "5c4d-uuid\tchr17\t1\t83257441\t80\t0.1\n5c4d-uuid\tchrUn_KI270742v1\t1\t9\t2\t0.3\n"
        + "5c4d-uuid\tchr17\t83257442\t83300000\t2\tNA\n",
    }  # fmt: skip
    for i, (name, text) in enumerate(files.items()):
        (folder / f"id{i}").mkdir(parents=True)
        (folder / f"id{i}" / name).write_text(text)
    (tmp_path / "sheet.tsv").write_text(
        "File ID\tFile Name\tSample ID\n"
        + "".join(f"id{i}\t{name}\tTCGA-BB-000{i}-01A\n" for i, name in enumerate(files))
    )
    layer = {"name": "cnv", "kind": "copy_number", "path": "dl", "sample_sheet": "sheet.tsv", "segments": "hg38"}
    tables = read_genomics(_dataset(tmp_path, layer, patient_id_length=12))
    matrix, samples = tables["expression"], tables["samples"]
    # hg38 17q12 is 33.5-39.8 Mb: 5.5 Mb at 1.0, 0.8 Mb at 0
    assert matrix.loc["TCGA-BB-0000", "cnv:17q12"] == pytest.approx(5.5 / 6.3)
    assert matrix.loc["TCGA-BB-0001", "cnv:17q12"] == pytest.approx(-0.2)
    assert "TCGA-BB-0002" not in matrix.index
    reason = samples.set_index("sample_id").loc["TCGA-BB-0002-01A", "reason"]
    assert "sheet.tsv row 3" in reason and "column 'End': not a number" in reason and "oops" not in reason
    assert not any("uuid" in c for c in matrix.columns) and "uuid" not in " ".join(genomics_issues(tables))
    # each file's segments left out are in the folder's report, summed (never dropped without a word)
    issues = genomics_issues(tables)
    assert any("dl: 1 segment(s) in 1 file(s) on other sequences" in line for line in issues)
    assert any("dl: 1 segment(s) in 1 file(s) without a value (NA)" in line for line in issues)
    assert matrix.loc["TCGA-BB-0003", "cnv:17q12"] == pytest.approx(0.1)


def test_deidentify_pseudonymises_a_segment_table_s_samples_and_the_bands_stay_the_same(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cna.seg").write_text(CBIOPORTAL)
    patients = ["TCGA-AA-0001", "TCGA-AA-0002"]
    (data / "labels.csv").write_text("patient_id,cancer_type\n" + "".join(f"{p},BRCA\n" for p in patients))
    (data / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv}\ngenomics:\n  patient_id_length: 12\n"
        "  layers:\n    - {name: cnv, kind: copy_number, path: cna.seg, segments: hg19}\n"
    )
    deidentify_and_compare(data, tmp_path / "out", b"k" * 32, patients)


SEG_FILES = ["table", "sheet", "gdc0", "gdc1"]
SEG_MUTATIONS = st.one_of(
    st.tuples(st.just("overwrite"), st.sampled_from(SEG_FILES), st.integers(0, 400), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.sampled_from(SEG_FILES), st.integers(0, 400)),
    st.tuples(st.just("binary"), st.sampled_from(SEG_FILES), st.integers(0, 400), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("line"), st.sampled_from(SEG_FILES), st.integers(0, 8)),
    st.tuples(st.just("fifo"), st.sampled_from(["gdc1"])),
    st.tuples(st.just("link_out"), st.sampled_from(["gdc0"])),
)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(mutations=st.lists(SEG_MUTATIONS, min_size=1, max_size=3))
def test_segment_tables_and_gdc_segment_files_survive_hostile_bytes(mutations: list[tuple]) -> None:
    """Bytes overwritten or cut, junk lines, a named pipe, a link out of the dataset: reading ends with the tables or
    clinicmm's own error; a damaged per-sample file never stops the read, and every sample its sheet names is in
    the sample table; nothing behind the link is read."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        (root / "dl" / "a").mkdir(parents=True)
        (root / "dl" / "b").mkdir()
        outside = Path(tmp) / "secret.seg"
        outside.write_text("GDC_Aliquot\tChromosome\tStart\tEnd\tNum_Probes\tSegment_Mean\nx\t1\t1\t900\t1\t7.5\n")
        paths = {"table": root / "cna.seg", "sheet": root / "sheet.tsv", "gdc0": root / "dl" / "a" / "a.seg.v2.txt",
                 "gdc1": root / "dl" / "b" / "b.seg.v2.txt"}  # fmt: skip
        paths["table"].write_text(CBIOPORTAL)
        for k in (0, 1):
            paths[f"gdc{k}"].write_text(
                "GDC_Aliquot\tChromosome\tStart\tEnd\tNum_Probes\tSegment_Mean\n"
                f"u{k}\tchr17\t1\t39000000\t80\t{k}.5\nu{k}\tchrX\t1\t1000000\t8\t-0.1\n"
            )
        paths["sheet"].write_text(
            "File ID\tFile Name\tSample ID\na\ta.seg.v2.txt\tTCGA-CC-0001-01A\nb\tb.seg.v2.txt\tTCGA-CC-0002-01A\n"
        )
        for mutation in mutations:
            _mutate(paths, mutation, outside)
        spec = DatasetSpec(name="fuzz", base_dir=root, genomics={"patient_id_length": 12, "layers": [
            {"name": "cnv", "kind": "copy_number", "path": "cna.seg", "segments": "hg19"},
            {"name": "gdc", "kind": "copy_number", "path": "dl", "sample_sheet": "sheet.tsv", "segments": "hg38"},
        ]})  # fmt: skip
        try:
            tables = in_thread(lambda: read_genomics(spec, roots=[root]))
        except ClinicmmError:
            assert not all(m[1].startswith("gdc") for m in mutations), "one bad per-sample file stopped the read"
            return
        samples = tables["samples"]
        sheet_intact = not any(m[1] == "sheet" for m in mutations)
        if sheet_intact:
            assert {"TCGA-CC-0001-01A", "TCGA-CC-0002-01A"} <= set(samples["sample_id"])
        matrix = tables["expression"]
        assert not (matrix.to_numpy() == 7.5).any()  # the linked file's value never read
