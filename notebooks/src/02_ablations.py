# %% [markdown]
# # 02 · Ablation of each loss
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# The paper's ablation with the same budget for every row: instance contrastive only; + cluster-wise
# contrastive; + self-entropy (with cluster-wise); + distance-of-distance (with cluster-wise); all
# four. Beside it, its successor ProtoOT (Li et al., AAAI 2024) on the same data, backbone and
# epochs: its in-domain loss alone, and with the cross-domain loss (the method). The table is the
# notebook's pair: the last epoch's numbers, averaged over both retrieval directions; deltas are
# against instance-only. When the dataset has a benchmark results file
# (`results/<dataset>.json`, e.g. the PACS benchmark's), the figure shows every direction of every
# pair from it, with the second seed and the anchor rows (per-domain centring, a labelled linear
# map) where the file has them; otherwise it shows the notebook's pair. Whatever they show is
# reported as measured.

#PARAMS#

# %%
import pandas as pd
from IPython.display import Markdown, display

from ucdir_core import companion as C
from ucdir_core.companion.figures import ablation_bars

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke, method="ucdir")
out = C.output_dirs(cfg, smoke)
results = C.load_results(cfg.dataset)  # None when the dataset has no results file

# %%
rows = {}
with C.transient_log():  # the training logs show while they run; the run folders keep them
    for name, (run_cfg, run_dir) in C.method_runs(out, data, preset, domains, epochs, seed, device, smoke).items():
        C.train_or_load(run_cfg, run_dir, progress=False)
        rows[name] = C.mean_over_directions(C.summary(run_dir)["last"]["eval"])

# %%
table = pd.DataFrame(rows).T
deltas = table - table.loc["instance"]
display(Markdown(C.provenance(cfg, "last epoch") + "\n\n" + table.round(1).to_markdown()
                 + "\n\nDelta against instance-only:\n\n" + deltas.round(1).to_markdown()))

# %%
if results is not None:
    fig, caption = C.ablation_over_directions(results)
else:
    fig = ablation_bars(rows, list(table.columns))
    caption = "Loss ablation, mean of both directions, last epoch. " + C.provenance(cfg, "last epoch")
C.show_figure(fig, "02_ablation", out.figures, pdf=True, caption=caption)

# %% [markdown]
# ## Check

# %%
assert list(table.index) == list(C.ROWS) and table.notna().all().all()
assert ((table >= 0) & (table <= 100)).all().all()
print("ok")
