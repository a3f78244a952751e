# %% [markdown]
# # 05 · Qualitative retrievals
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# For a few seeded random queries per direction: the query (left) and its top-10 retrievals from
# the other domain, with the trained run of `01_train`. Green border: same class as the query (a
# hit); red: a miss. Labels are used only to colour the borders.

#PARAMS#
n_queries = 4  # queries per direction

# %%
from ucdir_core import companion as C
from ucdir_core.viz import image_grid, save_figure

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke)
out = C.output_dirs(cfg, smoke)
run_dir = out.runs / C.run_name(cfg, "full")
C.train_or_load(cfg, run_dir, progress=not smoke)
emb, labels, trainer = C.run_embeddings(run_dir)

# %%
grids = {}
for q_side, g_side in ((0, 1), (1, 0)):
    grid = C.retrieval_examples(emb, labels, trainer, q_side, g_side, n_queries, top_k=10, seed=seed)
    direction = f"{cfg.domains[q_side]}->{cfg.domains[g_side]}"
    fig = image_grid(grid["images"], row_labels=grid["row_labels"], borders=grid["borders"], cell=1.0)
    save_figure(fig, f"05_retrievals_{direction.replace('->', '_to_')}", out.figures,
                caption=f"Top-10 retrievals {direction}; green = same class. " + C.provenance(cfg, "last epoch"))
    grids[direction] = grid

# %% [markdown]
# ## Check

# %%
for grid in grids.values():
    assert len(grid["images"]) == n_queries and all(len(r) == 11 for r in grid["images"])
    assert all(b in ("green", "red") for row in grid["borders"] for b in row[1:])
print("ok")
