# %% [markdown]
# # 05 · Qualitative retrievals
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# For each direction, with the trained run of `01_train`: every query's precision among its top 10
# results (per-query P@10), then the queries at a few quantiles of it (by default the 10th, 50th and
# 90th percentile), so that the rows show a bad, the typical and a good case rather than whatever a
# random draw gives. Each row: the query (left, labelled with its percentile and its P@10) and its
# top-10 retrievals from the other domain, each image with its class under it (the query's in bold).
# Green border: same class as the query (a hit); red: a miss. Labels are used only to pick the
# queries, colour the borders and name the classes; never in training.

#PARAMS#
quantiles = [0.1, 0.5, 0.9]  # one query per direction at each of these quantiles of per-query P@10

# %%
import numpy as np

from ucdir_core import companion as C
from ucdir_core.companion.figures import image_grid

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke)
out = C.output_dirs(cfg, smoke)
run_dir = out.runs / C.run_name(cfg, "full")
with C.transient_log():  # read back (trained here only when 01 has not run)
    history = C.train_or_load(cfg, run_dir, progress=False)
emb, labels, trained = C.run_embeddings(run_dir)
paths = C.evaluated_paths(trained)
classes = C.class_names(cfg)

# %%
grids, picked = {}, {}
for q_side, g_side in ((0, 1), (1, 0)):
    direction = f"{cfg.domains[q_side]}->{cfg.domains[g_side]}"
    precision = C.per_query_precision(emb[q_side], labels[q_side], emb[g_side], labels[g_side], k=10)
    picks = C.quantile_queries(precision, quantiles, seed=seed)
    grid = C.retrieval_grid(emb, labels, paths, q_side, g_side, picks, precision, top_k=10, class_names=classes)
    fig = image_grid(grid["images"], row_labels=grid["row_labels"], borders=grid["borders"], cell=1.1,
                     border_legend={"green": "same class as the query", "red": "another class"},
                     cell_labels=grid["classes"])
    C.show_figure(fig, f"05_retrievals_{direction.replace('->', '_to_')}", out.figures,
                  caption=f"Top-10 retrievals {direction} of the queries at the "
                  + ", ".join(f"{100 * q:.0f}th" for q in quantiles) + " percentiles of per-query P@10 "
                  + f"(mean over the {np.isfinite(precision).sum()} queries {np.nanmean(precision):.1f} %); "
                  + "each image's class under it (the query's in bold); green = same class. "
                  + C.provenance(cfg, "last epoch"))
    grids[direction], picked[direction] = grid, [precision[i] for _, i in picks]

# %% [markdown]
# ## Check

# %%
for direction, grid in grids.items():
    assert len(grid["images"]) == len(quantiles) and all(len(r) == 11 for r in grid["images"])
    assert all(b in ("green", "red") for row in grid["borders"] for b in row[1:])
    assert all((b == "green") == (c == cs[0]) for bs, cs in zip(grid["borders"], grid["classes"])
               for b, c in zip(bs[1:], cs[1:]))  # each frame agrees with the classes written under the images
    assert picked[direction] == sorted(picked[direction])  # quantiles in increasing order, precision too
print("ok")
