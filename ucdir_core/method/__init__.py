"""Layer 1, the methods: what is trained and how, independent of where images come from.

``losses`` (pure loss functions), ``schedules`` (per-epoch weights and learning rates),
``clustering`` (faiss k-means per domain), ``backbones`` and ``model`` (encoders, momentum update,
memory banks), ``interface`` (what a method provides to the trainer), ``ucdir`` (UCDIR behind that
interface), ``registry`` (a method by its config name) and ``ablation`` (the paper's loss ablation).
"""
