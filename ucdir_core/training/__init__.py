"""Layer 7, the training: a method trained in a run folder.

``runs`` (the run folder: config, history, atomic checkpoints, the summary, one writer),
``schedules`` (learning rates), ``optim`` (the optimiser a config names, the learning rate, mixed
precision), ``checkpointing`` (a trainer's state in ``last.pt`` and the resume), ``trainer`` (the loop: one ``step`` per batch, the method's per-epoch state,
evaluation, checkpoints, DDP) and ``build`` (from a config to a trainer; ``train``).
"""
