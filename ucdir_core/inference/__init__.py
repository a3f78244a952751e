"""Layer 8, inference: a trained run used. ``query`` (what embedding a new image needs: the config,
the checkpoint's key encoder, the evaluation transform), ``loading`` (the run's model over its
data, for evaluation; no optimiser, nothing written), ``index`` (the run's gallery indexes, ``ucdir
index``, their export) and ``retrieval`` (``ucdir retrieve``, which writes nothing)."""
