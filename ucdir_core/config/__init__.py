"""Layer 4, the run configuration (above the methods, whose parameters it holds): :mod:`.run`
(the shared keys plus the chosen method's parameters), :mod:`.presets` (named presets, each with
its provenance), :mod:`.rows` (the method tables' rows as configs)."""
