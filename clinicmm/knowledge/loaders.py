"""Readers and writers of the knowledge-graph files: GMT gene sets, edge triples, concepts, cancer types, nodes.

Every reader checks its file once, here at the edge, and raises ``InputError`` naming the file, the line and
how to fix it. Blank lines and lines starting with ``#`` are skipped everywhere. Tables are tab-separated,
UTF-8, with a header line (triple files may also come without one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinicmm.errors import InputError
from clinicmm.keys import KNOWLEDGE_NODES, Node, Rel
from clinicmm.knowledge.concepts import Concept
from clinicmm.knowledge.sections import norm

EDGE_COLUMNS = ("src_type", "src", "relation", "dst_type", "dst", "source")
SHORT_COLUMNS = ("head", "relation", "tail")
CONCEPT_COLUMNS = ("concept_id", "name", "kind", "synonyms")
CANCER_COLUMNS = ("code", "name", "definition")
NODE_COLUMNS = ("node_type", "name", "title", "definition")
CONCEPT_KINDS = ("site", "histology", "biomarker", "bodypart", "diagnosis")  # diagnosis: ontology terms (OBO)
# OBO cross-reference prefixes whose local id is a cancer-type code (``xref: ONCOTREE:LUAD``)
OBO_CODE_PREFIXES = ("oncotree", "oncotree_code", "tcga")
# OBO synonym scopes that name the term itself or something narrower, so a mention still implies the term
OBO_SCOPES = ("EXACT", "NARROW")
# the relations a knowledge graph may hold, each with the node types it links (the fusion batch contract)
SCHEMA: dict[Rel, tuple[Node, Node]] = {
    Rel.MEMBER_OF: (Node.GENE, Node.PATHWAY),
    Rel.DRIVER_OF: (Node.GENE, Node.CANCER),
    Rel.INDICATES: (Node.CONCEPT, Node.CANCER),
}


@dataclass(frozen=True)
class GeneSet:
    name: str
    description: str
    genes: tuple[str, ...]


@dataclass(frozen=True)
class Triple:
    src_type: Node
    src: str
    relation: Rel
    dst_type: Node
    dst: str
    source: str


@dataclass(frozen=True)
class OboTerm:
    id: str
    name: str
    definition: str
    synonyms: tuple[str, ...]  # EXACT and NARROW synonyms
    codes: tuple[str, ...]  # cancer-type codes from OncoTree / TCGA cross-references
    parents: tuple[str, ...]  # is_a parents (term ids)


@dataclass(frozen=True)
class NodeRow:
    node_type: Node
    name: str
    title: str = ""
    definition: str = ""


def synonym_forms(forms) -> tuple[str, ...]:
    """Synonyms as the concept matcher compares them (lower case, single spaces), blanks and repeats dropped."""
    return tuple(dict.fromkeys(norm(s) for s in forms if s.strip()))


def _at(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, tab-separated fields)`` of each non-blank, non-comment line of a text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path in the workflow's knowledge list") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({err}); save it as a UTF-8 text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, [field.strip() for field in line.split("\t")]


def _table(path: str | Path, columns: Sequence[str], optional: int = 0) -> Iterator[tuple[int, list[str]]]:
    """Rows of a table whose header must be ``columns``; its last ``optional`` columns may be left off."""
    rows = _rows(path)
    first = next(rows, None)
    if first is None or [f.lower() for f in first[1]] != list(columns):
        raise InputError(f"{path}: expected a tab-separated header line {'<TAB>'.join(columns)}")
    for number, fields in rows:
        if len(columns) - optional <= len(fields) < len(columns):
            fields = fields + [""] * (len(columns) - len(fields))
        if len(fields) != len(columns) or not all(fields[: len(columns) - optional]):
            raise InputError(
                f"{_at(Path(path), number)}: expected {len(columns)} tab-separated fields "
                f"({', '.join(columns)}), got {len(fields)} or an empty one"
            )
        yield number, fields


def read_gmt(path: str | Path) -> list[GeneSet]:
    """Gene sets of a GMT file: ``name<TAB>description<TAB>gene<TAB>gene ...`` per line."""
    out = []
    for number, fields in _rows(path):
        genes = tuple(dict.fromkeys(g for g in fields[2:] if g))
        if len(fields) < 3 or not fields[0] or not genes:
            raise InputError(
                f"{_at(Path(path), number)}: a GMT line needs name<TAB>description<TAB>gene..."
                f" with at least one gene; got {len(fields)} field(s)"
            )
        out.append(GeneSet(fields[0], fields[1], genes))
    return out


def node_type(value: str, where: str) -> Node:
    """The knowledge ``Node`` named ``value``, or an ``InputError`` listing the valid ones."""
    if value not in {t.value for t in KNOWLEDGE_NODES}:
        valid = ", ".join(t.value for t in KNOWLEDGE_NODES)
        raise InputError(f"{where}: unknown node type {value!r}; valid node types: {valid}")
    return Node(value)


def relation(value: str, src: Node, dst: Node, where: str) -> Rel:
    """The knowledge ``Rel`` named ``value`` linking ``src`` to ``dst``, or an ``InputError`` saying what is valid."""
    valid = ", ".join(f"{s.value} {r.value} {d.value}" for r, (s, d) in SCHEMA.items())
    if value not in {r.value for r in SCHEMA}:
        raise InputError(f"{where}: unknown relation {value!r}; valid relations: {valid}")
    rel = Rel(value)
    if SCHEMA[rel] != (src, dst):
        raise InputError(f"{where}: relation {value!r} cannot link {src.value} to {dst.value}; valid: {valid}")
    return rel


def _typed(value: str, where: str) -> tuple[Node, str]:
    """``gene:TP53`` -> (Node.GENE, 'TP53'); ``concept:site:lung`` -> (Node.CONCEPT, 'site:lung')."""
    kind, sep, name = value.partition(":")
    if not sep or not name:
        raise InputError(f"{where}: expected a typed id like gene:TP53 or concept:site:lung, got {value!r}")
    return node_type(kind, where), name


def _triple(fields: list[str], where: str, default_source: str, short: bool) -> Triple:
    if short and len(fields) in (3, 4):
        (st, s), (dt, d) = _typed(fields[0], where), _typed(fields[2], where)
        rel_name, source = fields[1], fields[3] if len(fields) == 4 else ""
    elif not short and len(fields) in (5, 6):
        st, dt = node_type(fields[0], where), node_type(fields[3], where)
        s, rel_name, d, source = fields[1], fields[2], fields[4], fields[5] if len(fields) == 6 else ""
    else:
        expected = (
            "3 tab-separated fields (head relation tail [source], e.g. gene:TP53<TAB>driver_of<TAB>"
            "cancer_type:LUAD) like the file's first row"
            if short
            else f"6 tab-separated fields ({', '.join(EDGE_COLUMNS)}) like the file's first row"
        )
        raise InputError(f"{where}: expected {expected}, got {len(fields)}")
    if not s or not d:
        raise InputError(f"{where}: empty node name; fill in both ends of the edge")
    return Triple(st, s, relation(rel_name, st, dt, where), dt, d, source or default_source)


def read_triples(path: str | Path) -> list[Triple]:
    """Edges of a triple file: the ``edges.tsv`` columns, or ``head relation tail [source]`` with typed ids.

    The header (or, without one, the first row's field count) says which form the whole file uses.
    """
    path = Path(path)
    out: list[Triple] = []
    short: bool | None = None
    for number, fields in _rows(path):
        lowered = tuple(f.lower() for f in fields)
        if short is None and lowered in (EDGE_COLUMNS, EDGE_COLUMNS[:5], SHORT_COLUMNS, (*SHORT_COLUMNS, "source")):
            short = lowered[0] == SHORT_COLUMNS[0]
            continue
        if short is None:
            short = len(fields) in (3, 4)
        out.append(_triple(fields, _at(path, number), path.name, short))
    return out


def read_concepts(path: str | Path) -> list[Concept]:
    """Concepts of a ``concepts.tsv``: id ``kind:name``, display name, kind, ``|``-separated synonyms."""
    out: dict[str, Concept] = {}
    for number, (cid, name, kind, synonyms) in _table(path, CONCEPT_COLUMNS, optional=1):
        where = _at(Path(path), number)
        if kind not in CONCEPT_KINDS:
            raise InputError(f"{where}: unknown concept kind {kind!r}; valid kinds: {', '.join(CONCEPT_KINDS)}")
        if not cid.startswith(f"{kind}:") or cid in out:
            raise InputError(f"{where}: concept id {cid!r} must be unique and start with '{kind}:'")
        syn = synonym_forms(synonyms.split("|"))
        out[cid] = Concept(cid, name, kind, syn)
    return list(out.values())


def read_cancer_types(path: str | Path) -> list[NodeRow]:
    """Cancer types of a ``cancer_types.tsv`` (code, name, definition) as cancer_type node rows."""
    return [
        NodeRow(Node.CANCER, code, name, definition)
        for _, (code, name, definition) in _table(path, CANCER_COLUMNS, optional=1)
    ]


def read_nodes(path: str | Path) -> list[NodeRow]:
    """Node rows of a ``nodes.tsv`` written by ``write_nodes``, in index order."""
    return [
        NodeRow(node_type(t, _at(Path(path), n)), name, title, definition)
        for n, (t, name, title, definition) in _table(path, NODE_COLUMNS, optional=2)
    ]


def write_tsv(path: str | Path, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write a tab-separated table with a header; tabs and line breaks inside a field become spaces."""

    def clean(value: object) -> str:
        return " ".join(str(value).replace("\t", " ").splitlines())

    lines = ["\t".join(columns)] + ["\t".join(clean(v) for v in row) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _obo_text(value: str) -> str:
    """The quoted text of an OBO ``def:`` / ``synonym:`` value (``"text" EXACT [refs]`` -> ``text``)."""
    value = value.strip()
    if value.startswith('"'):
        end = value.find('"', 1)
        while end > 0 and value[end - 1] == "\\":
            end = value.find('"', end + 1)
        return value[1:end] if end > 0 else value[1:]
    return value


def _obo_scope(value: str) -> str:
    rest = value[value.rfind('"') + 1 :].split() if value.startswith('"') else []
    return rest[0] if rest else "RELATED"


def read_obo(path: str | Path) -> tuple[str, list[OboTerm]]:
    """The ontology label (``ontology`` and ``data-version`` headers, else the file name) and its non-obsolete terms.

    Parsed with obonet (networkx); only ``is_a`` parents are kept. A file obonet cannot parse, or one with no
    ``[Term]``, is an ``InputError`` naming the file.
    """
    from clinicmm.extras import require

    obonet = require("obonet")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path in the workflow's knowledge list")
    try:
        graph = obonet.read_obo(str(path))
    except Exception as err:  # obonet raises plain exceptions of several kinds on malformed files
        raise InputError(
            f"{path}: not a readable OBO file ({type(err).__name__}: {err}); check it is an OBO 1.2/1.4 "
            "ontology in UTF-8 (e.g. exported by ROBOT or OBO-Edit)"
        ) from None
    if graph.number_of_nodes() == 0:
        raise InputError(f"{path}: no [Term] stanza with an id; is it an OBO ontology file?")
    meta = graph.graph
    label = " ".join(str(meta[k]) for k in ("ontology", "data-version") if meta.get(k)) or path.name
    parents: dict[str, list[str]] = {}
    for child, parent, key in graph.edges(keys=True):
        if key == "is_a":
            parents.setdefault(child, []).append(parent)
    terms = []
    for term_id, data in graph.nodes(data=True):
        if not data.get("name"):
            continue  # a term only referenced as a parent, not defined in this file
        synonyms = tuple(dict.fromkeys(_obo_text(v) for v in data.get("synonym", []) if _obo_scope(v) in OBO_SCOPES))
        codes = tuple(
            x.partition(":")[2].split()[0]
            for x in data.get("xref", [])
            if x.partition(":")[0].lower() in OBO_CODE_PREFIXES and x.partition(":")[2].strip()
        )
        terms.append(
            OboTerm(
                term_id, data["name"], _obo_text(data.get("def", "")), synonyms, codes, tuple(parents.get(term_id, ()))
            )
        )
    return label, terms
