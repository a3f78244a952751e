"""Layer 0, the base: what every other layer uses and nothing here imports from above.

``config`` (the run's frozen settings and presets), ``errors`` (the one-line error types),
``io`` (atomic writes and safe checkpoint loading), ``pair`` (``DomainPair``), ``device``,
``seeding`` (the random generators, in one place), ``distributed`` (process-group helpers) and
``arrays`` (small numpy helpers).
"""
