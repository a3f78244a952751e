# %% [markdown]
# # 00 · The data at a glance
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# UCDIR learns from two unlabelled image collections. This notebook shows what those collections
# hold: images per domain and class (labels are shown here, and used only for evaluation later),
# and a grid of samples per domain and class.

#PARAMS#

# %%
from IPython.display import Markdown, display

from ucdir_core import companion as C
from ucdir_core.companion.figures import class_counts_figure, image_grid
from ucdir_core.data.checks import check_dataset
from ucdir_core.data.locations import resolve_root

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke)
out = C.output_dirs(cfg, smoke)
root = resolve_root(cfg)
report = check_dataset(root, progress=False)
counts = report.counts

# %%
display(Markdown(C.counts_table(counts)))
print(f"{report.total} images; problem files: {report.to_dict()['problem_counts']}")

# %%
fig = class_counts_figure(counts)
C.show_figure(fig, "00_class_counts", out.figures,
              caption=f"Images per domain and class, {cfg.dataset} ({C.dataset_location(cfg)}).")

# %%
rows, labels = C.sample_grid(root, counts, per_class=4 if smoke else 6, seed=seed)
fig = image_grid(rows, row_labels=labels, cell=0.9)
C.show_figure(fig, "00_samples", out.figures, caption=f"Samples per domain and class, {cfg.dataset}.", dpi=90,
              display_dpi=C.GRID_DISPLAY_DPI)

# %% [markdown]
# ## Check

# %%
assert report.usable and report.total == sum(sum(c.values()) for c in counts.values())
assert len(counts) >= 2 and all(len(c) > 0 for c in counts.values())
print("ok")
