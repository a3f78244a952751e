# %% [markdown]
# # 01 · Training one method on one pair of domains
#
# Companion to C. Hu and G. H. Lee, *Feature Representation Learning for Unsupervised Cross-domain
# Image Retrieval*, ECCV 2022 ([arXiv:2207.09721](https://arxiv.org/abs/2207.09721)).
#
# Trains the preset's method on one pair, every loss on (UCDIR: instance contrastive,
# cluster-wise contrastive, self-entropy, distance-of-distance; ProtoOT, with a `protoot_*`
# preset: in-domain and cross-domain losses), then plots every loss term and P@k / mAP per epoch. Dashed
# lines mark the epochs at which the schedule switches each cluster-based loss on. The run folder
# keeps the config (its main settings are shown below), a JSONL history and checkpoints; rerunning
# the notebook reads it back.

#PARAMS#

# %%
from IPython.display import Markdown, display

from ucdir_core import companion as C
from ucdir_core.companion.figures import training_curves

cfg = C.notebook_config(data, preset, domains, epochs, seed, device, smoke)
out = C.output_dirs(cfg, smoke)
run_dir = out.runs / C.run_name(cfg, C.full_row(cfg))
display(Markdown(f"Training **{C.method_title(cfg)}** (row `{C.full_row(cfg)}`).\n\n"
                 + C.config_table(cfg, full_at=run_dir / "config.json")))

# %%
with C.transient_log():  # the training log shows while it runs; the run folder keeps it
    history = C.train_or_load(cfg, run_dir, progress=False)
switch_on = C.switch_on_epochs(cfg)
print("losses switch on at epochs:", switch_on)

# %%
fig = training_curves(history, switch_on)
C.show_figure(fig, "01_training_curves", out.figures, pdf=True,
              caption="Loss terms and retrieval per epoch. " + C.provenance(cfg, "every epoch"))

# %%
s = C.summary(run_dir)
display(Markdown(C.last_best_table(s)))

# %% [markdown]
# ## Check

# %%
import math

assert [r["epoch"] for r in history] == list(range(cfg.epochs))
assert all(math.isfinite(r["loss_total"]) for r in history)
assert all(0 <= v <= 100 for r in history if "eval" in r for m in r["eval"].values() for v in m.values())
print("ok")
