"""Layer 0, the base: what every other layer uses and nothing here imports from above.

``params`` (frozen parameter dataclasses with declared ranges; schedule values as epochs or
shares of training), ``errors`` (the one-line error types), ``io`` (atomic writes and safe
checkpoint loading), ``text`` (paths and names printed safely, one-line errors), ``pair``
(``DomainPair``), ``device``, ``seeding`` (the random generators, in one place), ``distributed``
(process-group helpers) and ``arrays`` (small numpy helpers).
"""
