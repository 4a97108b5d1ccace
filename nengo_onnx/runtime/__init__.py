"""Running a compiled program: the simulation state (`runtime`), the per-step inputs
(`feeds`), the operators that run in Python (`host`) and ``sim.signals`` (`signals`)."""
