"""Robustness and resilience (issue 12): uncertainty injectors (`injectors`), their application to a run
(`perturb`), the metrics against the nominal run (`metrics`), and `tokenstack robustness` on the sweep
machinery (`sweep`, `report`)."""
