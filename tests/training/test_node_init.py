"""``training.node_init: graph`` reaches the graph models through the one fit path (train, compare, leave-one-site-out)."""

from __future__ import annotations

import pytest
import torch

from clinicmm.keys import Split

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.fixture(scope="module")
def data(tmp_path_factory, encoded_genomics):
    from clinicmm.training.data import TrainingData

    root = tmp_path_factory.mktemp("node_init")
    return TrainingData(encoded_genomics(root, 36, "node_init", ["kg_gnn"], primary_model="kg_gnn"))


@pytest.mark.parametrize("node_init", ["graph", "random"])
def test_the_fitted_graph_model_starts_its_genes_where_node_init_says(data, node_init):
    from clinicmm.fusion.models.kg_gnn import CONTEXT_STD
    from clinicmm.knowledge.embedding import structural_embedding
    from clinicmm.training.fit import fit_model

    spec = data.wf.training.model_copy(update={"node_init": node_init, "offset": "none", "max_epochs": 1})
    fitted = fit_model("kg_gnn", data, data.rows(Split.TRAIN), data.rows(Split.VAL), spec, progress=False)
    weight = fitted.model.embeddings["gene"].weight.detach()
    vectors = torch.from_numpy(structural_embedding(data.kg, weight.size(1))["gene"])
    # genes no patient links and no cancer type reads get no gradient: AdamW only shrinks them, so their direction
    # is still the one they started from
    linked = {data.kg.index("gene", name) for names in data.encoded.links["omics"] for name in names}
    drivers = {data.kg.index("gene", g) for g, _, _ in data.kg.edges("gene", "driver_of", "cancer_type")}
    idle = [i for i in range(len(weight)) if i not in drivers and i not in linked and vectors[i].any()][:200]
    cos = torch.nn.functional.cosine_similarity(weight[idle], vectors[idle], dim=1)
    if node_init == "graph":
        assert cos.min() > 0.999
        assert weight[idle].pow(2).mean(1).sqrt().max() <= CONTEXT_STD + 1e-6
    else:
        assert abs(cos.mean()) < 0.15 and cos.min() < 0.5  # unrelated directions (8 dimensions: |cos| ~ 0.3 by chance)
