# %% [markdown]
# # 03 · Domain alignment, before, during and after training
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# **Can these features be aligned without labels, and by what?** Every loss of UCDIR and of its
# successor ProtoOT (Li et al., AAAI 2024) is a softmax over one domain's bank or prototypes, which
# a shift of that whole domain leaves unchanged (`tests/test_protoot.py`), so neither method needs
# to bring the domains together. This notebook measures, on its own pair and runs, how far apart
# the domains are before training, after UCDIR (`full`, the run of `01_train`) and after ProtoOT
# (the run of `02_ablations`), and what a label-free alignment stage fitted after training changes:
# Harmony (Korsunsky et al., Nature Methods 2019; `harmonypy`), soft k-means with a penalty that
# makes every cluster hold both domains in proportion, then a per-cluster correction of each
# domain's offset, fitted on the run's training embeddings with the domain as the batch variable
# (`ucdir_core.align`). The answer below is written from this execution's numbers; after it, the
# benchmark's numbers over every pair are quoted from the dataset's results file when it has one
# (`results/pacs.json`: 12 directions, both splits).
#
# The measures: **domain mixing** (share of each image's 10 nearest neighbours from the other
# domain, relative to perfect mixing: 0 = apart, 1 = mixed), **class agreement** (share of the 10
# nearest neighbours with the image's class, in percent), mean **P@1** and **mAP** of both
# directions, and **class discovery**: k-means with K = the number of classes on both domains
# together, scored by the adjusted Rand index against the classes, with how evenly its clusters hold
# both domains (balance, 1 = in proportion). Labels enter these measures only. Then domain mixing
# and class agreement at every evaluated epoch of each run of `02_ablations`, with the entropy of
# how one domain's embeddings spread over the other domain's k-means prototypes (what self-entropy
# and distance-of-distance act on), where the runs recorded them.

#PARAMS#

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from ucdir_core import companion as C
from ucdir_core.companion.figures import alignment_curves, umap_panels
from ucdir_core.evaluation.alignment import umap_2d

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke, method="ucdir")
out = C.output_dirs(cfg, smoke)
row_runs = C.method_runs(out, data, preset, domains, epochs, seed, device, smoke)
runs = {"UCDIR full": row_runs["full"][1], "ProtoOT": row_runs["protoot"][1]}
with C.transient_log():  # read back (trained here only when 01 and 02 have not run)
    for row in ("full", "protoot"):
        C.train_or_load(*row_runs[row], progress=False)

# %%
_, before = C.baseline_report(cfg)
embeddings = {"before": before}
for name, run_dir in runs.items():
    embeddings[name], labels, trained = C.run_embeddings(run_dir)
    embeddings[f"{name} + Harmony"], _ = C.aligned_embeddings(trained, "harmony")
table = pd.DataFrame({name: C.embedding_diagnostics(emb, labels, cfg) for name, emb in embeddings.items()}).T
display(Markdown(C.alignment_answer(table, cfg.domains) + "\n\n" + C.provenance(cfg, "last epoch")
                 + "; " + C.alignment_settings(C.AlignmentParams(alignment="harmony")) + ".\n\n"
                 + table.round(3).to_markdown()))
stats = {name: table.loc[name, ["domain_mixing", "class_agreement"]].to_dict() for name in table.index}

# %%
quoted = C.benchmark_alignment_table(C.load_results(cfg.dataset))
display(Markdown(quoted or f"`results/{cfg.dataset}.json` holds no benchmark rows with the alignment stage: "
                 "the numbers above are this execution's only."))

# %%
panels = {name: umap_2d(np.concatenate([emb.a, emb.b]), seed=seed) for name, emb in embeddings.items()}
domain = np.r_[np.zeros(len(labels.a), int), np.ones(len(labels.b), int)]
classes = C.class_names(cfg)
fig = umap_panels(panels, domain, np.r_[labels.a, labels.b], cfg.domains, classes)
C.show_figure(fig, "03_umap_alignment", out.figures, pdf=True,
              caption="UMAP before training (pretrained backbone), after UCDIR (full) and after ProtoOT, each "
              "without and with the label-free Harmony alignment, by domain and by class. "
              + C.provenance(cfg, "last epoch"))

# %%
histories = C.ablation_histories(out.runs, cfg)
if C.has_alignment(histories):
    C.show_figure(alignment_curves(histories, before=stats["before"]), "03_alignment_per_epoch", out.figures, pdf=True,
                  caption="Domain mixing, class agreement and prototype spread per evaluated epoch, per run of "
                  "02 (UCDIR's ablation and ProtoOT); dashed: the pretrained backbone. "
                  + C.provenance(cfg, "every evaluated epoch"))
else:
    display(Markdown(f"The histories of the {len(histories)} runs found carry no alignment records."))

# %% [markdown]
# ## Check

# %%
for s in stats.values():
    assert 0 <= s["domain_mixing"] <= 2.5 and 0 <= s["class_agreement"] <= 100
assert list(table.index) == ["before", "UCDIR full", "UCDIR full + Harmony", "ProtoOT", "ProtoOT + Harmony"]
assert ((table["adjusted_rand"] <= 1) & (table["balance"] >= 0) & (table["balance"] <= 1)).all()
assert all(p.shape == (len(domain), 2) for p in panels.values())
print("ok")
