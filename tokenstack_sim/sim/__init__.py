"""The simulation: the step-cost model of a system and the engine that serves a workload on it."""
