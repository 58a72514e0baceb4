"""Property-based fuzzing of the omics readers for published layouts: a GDC download (sample sheet, per-sample STAR
files, a folder of MAFs), a Firehose methylation table and an Illumina manifest, with bytes overwritten or cut off,
junk lines, named pipes and links out of the dataset drawn by hypothesis. The properties: reading ends, returning the
tables or raising clinicmm's own error, never another exception or a hang; a damaged per-sample file or MAF never
stops the read, and every sample the sheet names is then in the sample table, read or skipped with a reason; nothing a link out of the dataset leads to is read or shown."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_trees import in_thread

from clinicmm.config import DatasetSpec
from clinicmm.errors import ClinicmmError
from clinicmm.ingest.genomics import read_genomics

SAMPLES = ["TCGA-A3-3301-01A", "TCGA-A3-3302-01A", "TCGA-A3-3303-11A"]
JUNK = "zq\x00\u00e9\t,\n;[Controls]#"  # what a mutation writes
FILES = ["sheet", "star0", "star1", "star2", "meth", "manifest", "maf0", "maf1"]
MUTATIONS = st.one_of(
    st.tuples(st.just("overwrite"), st.sampled_from(FILES), st.integers(0, 600), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.integers(0, 600)),
    st.tuples(st.just("binary"), st.sampled_from(FILES), st.integers(0, 600), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("line"), st.sampled_from(FILES), st.integers(0, 12)),
    st.tuples(st.just("fifo"), st.sampled_from(["star1", "maf1"])),
    st.tuples(st.just("link_out"), st.sampled_from(["star2", "maf0"])),
    st.tuples(st.just("delete"), st.sampled_from(["star0", "maf1", "manifest"])),
)


def _write(root: Path) -> dict[str, Path]:
    paths = {"sheet": root / "sheet.tsv", "meth": root / "meth.txt", "manifest": root / "manifest.csv"}
    rows = ["File ID\tFile Name\tSample ID"]
    for k, sample in enumerate(SAMPLES):
        name = f"s{k}.rna_seq.augmented_star_gene_counts.tsv"
        (root / "dl" / f"id{k}").mkdir(parents=True)
        paths[f"star{k}"] = root / "dl" / f"id{k}" / name
        paths[f"star{k}"].write_text(
            "# gene-model: GENCODE v36\ngene_id\tgene_name\tgene_type\tunstranded\ttpm_unstranded\n"
            f"N_unmapped\t\t\t20\t\nENSG00000141510.17\tTP53\tprotein_coding\t{10 + k}\t{1.5 + k}\n"
            f"ENSG00000146648.18\tEGFR\tprotein_coding\t{30 + k}\t{2.5 * k}\n"
        )
        rows.append(f"id{k}\t{name}\t{sample}")
    paths["sheet"].write_text("\n".join(rows) + "\n")
    (root / "mafs").mkdir()
    for k in range(2):
        paths[f"maf{k}"] = root / "mafs" / f"c{k}.maf"
        paths[f"maf{k}"].write_text(
            "#version gdc-1.0.0\nHugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\n"
            f"TP53\tMissense_Mutation\t{SAMPLES[k]}-01D\n"
        )
    header = "Hybridization REF\t" + "\t".join(s for s in SAMPLES for _ in range(2))
    paths["meth"].write_text(
        f"{header}\nComposite Element REF\t" + "\t".join(["Beta_value", "Gene_Symbol"] * 3) + "\n"
        "cg01\t0.1\tTP53\t0.2\tTP53\t0.3\tTP53\ncg02\t0.4\tEGFR\t0.5\tEGFR\tNA\tEGFR\n"
    )
    paths["manifest"].write_text("Illumina, Inc.,,\n[Heading],,\n[Assay],,\nIlmnID,Name,UCSC_RefGene_Name\n"
                                 "cg01,cg01,TP53;TP53\n[Controls],,\n1,STAINING,Red\n")  # fmt: skip
    return paths


def _mutate(paths: dict[str, Path], mutation: tuple, outside: Path) -> None:
    kind, name, *args = mutation
    path = paths[name]
    if not path.exists() or path.is_symlink() or not path.is_file():
        return
    if kind == "overwrite":
        data = bytearray(path.read_bytes())
        at = args[0] % (len(data) + 1)
        data[at : at + args[1]] = (JUNK.encode() * 4)[: args[1]]
        path.write_bytes(bytes(data))
    elif kind == "binary":  # bytes that are not UTF-8 (a compressed file without .gz, a damaged sector)
        data = bytearray(path.read_bytes())
        at = args[0] % (len(data) + 1)
        data[at : at + len(args[1])] = b"\xff" + args[1]
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: args[0]])
    elif kind == "line":
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        lines.insert(args[0] % (len(lines) + 1), JUNK + "\n")
        path.write_text("".join(lines))
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "link_out":
        path.unlink()
        path.symlink_to(outside)
    elif kind == "delete":
        path.unlink()


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3), compressed=st.booleans())
def test_published_omics_layouts_survive_hostile_bytes(mutations: list[tuple], compressed: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        outside = Path(tmp) / "secret.tsv"
        outside.write_text("gene_id\ttpm_unstranded\nSECRET\t1\n")
        paths = _write(root)
        for mutation in mutations:
            _mutate(paths, mutation, outside)
        if compressed and paths["maf0"].is_file() and not paths["maf0"].is_symlink():
            gz = paths["maf0"].with_suffix(".maf.gz")
            gz.write_bytes(gzip.compress(paths["maf0"].read_bytes()))
            paths["maf0"].unlink()
        spec = DatasetSpec(
            name="fuzz",
            base_dir=root,
            genomics={
                "patient_id_length": 12,
                "expression": {"path": "dl", "sample_sheet": "sheet.tsv", "unit": "tpm"},
                "layers": [
                    {
                        "name": "meth",
                        "kind": "methylation",
                        "path": "meth.txt",
                        "features": "probe",
                        "orientation": "genes_x_samples",
                        "feature_map": "manifest.csv",
                    }
                ],  # fmt: skip
                "mutations": {"path": "mafs"},
            },
        )
        per_file = all(m[1].startswith(("star", "maf")) for m in mutations)
        try:
            tables = in_thread(lambda: read_genomics(spec, roots=[root]))
        except ClinicmmError:
            # a bad sample file or MAF skips its sample or rows; only a damaged sheet, table or map may stop the read
            assert not per_file, "one bad per-sample file stopped the whole read"
            return
        samples = tables["samples"]
        reasons = samples.loc[samples["status"] == "skipped", "reason"]
        assert (reasons.str.len() > 0).all()
        assert not reasons.str.contains("SECRET").any()
        sheet_rows = samples[samples["source"].str.contains("/dl")]
        assert len(sheet_rows) >= 1 and (len(sheet_rows) == len(SAMPLES) or not per_file)
        muts = tables["mutations"]
        assert not muts["reason"].str.contains("SECRET").any() and "SECRET" not in set(muts["gene"])
        assert "SECRET" not in tables["expression"].columns
