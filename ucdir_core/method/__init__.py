"""Layer 2, the methods: what is trained and how, independent of where images come from.

UCDIR: ``ucdir_params`` (its parameters, ranges and table rows), ``losses`` (its four pure loss
functions), ``ucdir`` (its schedule and objective behind the interface). ProtoOT:
``protoot_params``, ``transport``, ``prototype_losses``, ``protoot``. Shared: ``schedules``
(loss-weight ramps), ``clustering`` (faiss k-means per domain), ``interface`` (what a method
provides to the trainer), ``params`` (each method's parameters and rows by name, torch-free) and
``registry`` (a method by its config name).
"""
