"""Layer 4, the training: a method trained in a run folder.

``runs`` (the run folder: config, history, atomic checkpoints, one writer), ``optim`` (the
optimiser a config names), ``trainer`` (the loop: one ``step`` per batch, the method's per-epoch
state, evaluation, checkpoints, DDP) and ``build`` (from a config to a trainer; ``train``).
"""
