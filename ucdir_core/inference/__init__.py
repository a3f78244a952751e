"""Layer 8, inference: a trained run's model loaded for evaluation and retrieval (no optimiser,
nothing written into the run folder)."""
