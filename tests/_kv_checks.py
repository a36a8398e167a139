"""Test helper: check the tiered KV's invariants at every engine step."""


def check_tiers_every_step(monkeypatch) -> list:
    """Patch TieredKv.begin_step to run TieredKv.check() first; returns a list that grows by one per
    checked step (so a test can assert the check ran)."""
    from tokenstack_sim.kv.tiered import TieredKv

    checks = []
    orig = TieredKv.begin_step

    def begin_step(self):
        self.check()
        checks.append(1)
        orig(self)

    monkeypatch.setattr(TieredKv, "begin_step", begin_step)
    return checks
