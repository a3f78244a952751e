# %% [markdown]
# # 03 · Domain alignment, before, during and after training
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# **Can these features be aligned without labels, and by what?** On PACS, not by either method
# here. ProtoOT's optimal transport onto the other domain's prototypes leaves photos and sketches
# two clouds, as UCDIR's distance-of-distance does: mean domain mixing over the 6 pairs is 0.091
# for ProtoOT, 0.088 for UCDIR `full`, 0.069 untrained and 0.77 for a linear map fitted with
# labels; class agreement falls from 77.9 to 76.2 %. ProtoOT lifts retrieval without mixing:
# P@1 / mAP over 12 directions 62.3 / 47.9 against 59.5 / 44.3 (full split), 56.7 / 46.7 against
# 56.9 / 42.6 (held out), most of the P@1 gain on the two pairs its cross-domain weight was tuned
# on; on the 8 other directions 63.8 / 50.5 against 66.1 / 50.1 (full) and 63.0 / 51.9 against
# 62.0 / 46.8 (held out). (PACS benchmark, `results/pacs.json`: EfficientNet-Lite0 CPU regime,
# 128 px, 5 epochs, last epoch, seed 0; `docs/results.md`, "ProtoOT".) Why: every loss of both
# methods is a softmax over one domain's bank or prototypes, which a shift of that whole domain
# leaves unchanged (`tests/test_protoot.py`); the opt-in terms that such a shift does change buy
# mixing only with P@1 (`docs/results.md`, "ProtoOT trials"). The figures below show it for the
# notebook's pair.
#
# UMAP of both domains' embeddings: the pretrained backbone's pooled features before training, and
# the trained key encoder's embeddings after UCDIR (`full`, the run of `01_train`) and after its
# successor ProtoOT (Li et al., AAAI 2024: the domains aligned by optimal transport onto
# prototypes; the run of `02_ablations`). Two numbers go with each: **domain mixing** (share of
# each image's 10 nearest neighbours from the other domain, relative to perfect mixing: 0 = apart,
# 1 = mixed) and **class agreement** (share of the 10 nearest neighbours with the image's class, in
# percent). Then the same two numbers at every evaluated epoch of each run of `02_ablations`, with
# the entropy of how one domain's embeddings spread over the other domain's k-means prototypes
# (what self-entropy and distance-of-distance act on), where the runs recorded them.

#PARAMS#

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from ucdir_core import companion as C
from ucdir_core.companion.figures import alignment_curves, umap_panels
from ucdir_core.evaluation.alignment import mixing_and_agreement, umap_2d

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
    embeddings[name], labels, _ = C.run_embeddings(run_dir)
stats = {name: mixing_and_agreement(emb.a, labels.a, emb.b, labels.b) for name, emb in embeddings.items()}
table = pd.DataFrame(stats).T.rename(columns={"domain_mixing": "domain mixing", "class_agreement": "class agreement %"})
display(Markdown(C.provenance(cfg, "last epoch") + "\n\n" + table.round(3).to_markdown()))

# %%
panels = {name: umap_2d(np.concatenate([emb.a, emb.b]), seed=seed) for name, emb in embeddings.items()}
domain = np.r_[np.zeros(len(labels.a), int), np.ones(len(labels.b), int)]
classes = C.class_names(cfg)
fig = umap_panels(panels, domain, np.r_[labels.a, labels.b], cfg.domains, classes)
C.show_figure(fig, "03_umap_alignment", out.figures, pdf=True,
              caption="UMAP before training (pretrained backbone), after UCDIR (full) and after ProtoOT, by domain "
              "and by class. "
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
assert all(p.shape == (len(domain), 2) for p in panels.values())
print("ok")
