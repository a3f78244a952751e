# %% [markdown]
# # 04 · Retrieval tables: every direction of every pair
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# P@k (the reference's pooled definition) and mAP for every direction of every domain pair, for
# UCDIR and for the pretrained backbone without training. With `results_file` set (e.g. the PACS
# benchmark's `results/pacs.json`) the table is read from that file; otherwise every pair is
# trained here with the notebook's parameters. The protocol is written above each table.

#PARAMS#
results_file = None  # a benchmark results JSON (e.g. "results/pacs.json"); None: train each pair here

# %%
from IPython.display import Markdown, display

from ucdir_core import companion as C

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke)
out = C.output_dirs(cfg, smoke)

# %%
with C.transient_log():  # the training logs show while they run; the run folders keep them
    if results_file:
        tables = C.tables_from_results(C.project_root() / results_file)
    else:
        tables = C.tables_by_training(cfg, out, progress=False)
for title, (protocol, rows) in tables.items():
    display(Markdown(f"### {title}\n\n{protocol}\n\n" + C.markdown_table(rows)))

# %%
paths = C.save_tables(tables, out.figures / "04_retrieval_tables")
print("written:", ", ".join(C.display_path(p) for p in paths))

# %% [markdown]
# ## Check

# %%
assert tables and all(rows for _, rows in tables.values())
assert all(0 <= v <= 100 for _, rows in tables.values() for r in rows.values() for v in r.values())
print("ok")
