"""Check the serving engine's composition of a batch's PIM decode attention against the cycle kernel.

    python scripts/pim_batch_check.py [--seeds 5] [--markdown]

The engine (sim/step_cost.py `StepModel._pim_time_ns`) times one layer's decode attention of B
sequences on one PIM stack from T(t), the characterized op of ONE sequence of t tokens spread over every
PIM scope of the stack (hw/opcost: a one-channel slice at load 0):

    serial   sum_i T(t_i)
    packed   T(sum_i t_i) + (ceil(B / n_scopes) - 1) * T(16)        (the engine's default)

Here the kernel runs the batch itself: `pim.batch_attention_programs` packs the (sequence, head) items
over the scopes (whole items longest-first to the least-loaded scope when B >= scopes; each item striped
over a minimax number of scopes when B < scopes) and the full stack (every channel, power budget on)
runs them; the batch time is the slowest scope's. Two further compositions are checked:

    scope-max  max over scopes j of T(n * L_j) + (m_j - 1) * T(16): scope j holds L_j tokens in m_j
               slices (from the packing, `pim.batch_work`); T(n * L) is one sequence giving each scope L
               tokens, i.e. one slice's fixed cost plus L tokens at the per-scope rate, read off the table.
    closed     the same without the packing, vectorized for the engine: B < n: T(n * L*), L* = the least
               L with sum_i ceil(t_i / L) <= n (the striping's largest per-scope share, exactly what
               batch_work does); B >= n: T(n * L_snake) + (ceil(B / n) - 1) * T(16), L_snake = the largest
               scope of a snake deal (tokens sorted longest first, dealt to scopes 0..n-1, n-1..0, ...),
               a stand-in for the LPT packing that numpy computes in one sort and one sum.

T(t) is simulated at the exact sizes here (attention_programs on the channel slice, as hw/opcost's
simulate_op does at load 0), so the errors are the composition's, not the table's interpolation.
Shapes: heads=1 per stack, gqa=8, head_dim=128, BF16 KV (Llama-3.1-70B at TP 8: one KV head per GPU
shard) on hbm4-12h-tokenstack (64 SID scopes) and on hbm4-12h-uniform-pim with pim.mode_scope="channel"
(AttAcc's device: 32 channel scopes).
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

DEVICES = {
    "tokenstack": ("hbm4-12h-tokenstack", ()),
    "attacc": ("hbm4-12h-uniform-pim", ('pim.mode_scope="channel"',)),
}
SHAPE = dict(kv_heads=1, gqa=8, head_dim=128, kv_bytes=2)
BATCHES = (1, 4, 16, 32, 64, 96, 128, 256)  # the brief's 1, 4, 16, 64, 256 and B near n, 1.5n, 2n
FIXED_TOKENS = 16  # the smallest characterized non-zero size (hw/opcost/table.py ATTENTION_TOKENS)
FORMULAS = ("serial", "packed", "scope-max", "closed")


def draw(dist: str, B: int, seed: int) -> list[int]:
    """Per-sequence tokens on one stack: 'uniform' 64..2048, or 'equal' 256 each."""
    if dist == "equal":
        return [256] * B
    return np.random.default_rng([seed, B]).integers(64, 2049, B).tolist()


class Device:
    """One PIM stack: the kernel's batch time and the single-sequence op T(t)."""

    def __init__(self, key: str):
        from tokenstack_sim.config.loader import load_config
        from tokenstack_sim.hw.stack.pim import PimUnits

        name, overrides = DEVICES[key]
        self.key = key
        self.stack = load_config(name, list(overrides), kind="stack")
        self.n = PimUnits.of(self.stack).n_scopes
        self.c0 = min(c for c, _ in self.stack.tier_units("pim"))
        self.T = functools.lru_cache(maxsize=None)(self._single)

    def _single(self, tokens: int) -> float:
        """T(t): one sequence over every scope, timed on the channel slice at load 0 (as opcost does)."""
        from tokenstack_sim.hw.stack.pim import attention_programs
        from tokenstack_sim.hw.stack.run import run_stack

        if tokens <= 0:
            return 0.0
        p = attention_programs(self.stack, tokens=int(tokens), channels=(self.c0,), **SHAPE)
        return run_stack(self.stack, programs=p).op_time_ns[0]

    def kernel(self, toks: list[int]) -> tuple[float, float]:
        """(batch time ns, throttled share) of the packed batch on the full stack."""
        from tokenstack_sim.hw.stack.pim import batch_attention_programs
        from tokenstack_sim.hw.stack.run import run_stack

        r = run_stack(self.stack, programs=batch_attention_programs(self.stack, toks, **SHAPE))
        return r.op_time_ns[0], r.throttled_share

    # --- compositions from T ---------------------------------------------------------------------------
    def serial(self, toks):
        return sum(self.T(t) for t in toks)

    def packed(self, toks):
        rounds = math.ceil(len(toks) / self.n)
        return self.T(sum(toks)) + (rounds - 1) * self.T(FIXED_TOKENS)

    def scope_max(self, toks):
        from tokenstack_sim.hw.stack.pim import batch_work

        work = batch_work(self.n, toks, SHAPE["kv_heads"])
        return max(self.T(self.n * sum(t for _, t in w)) + (len(w) - 1) * self.T(FIXED_TOKENS)
                   for w in work.values() if w)

    def closed(self, toks):
        """The serving engine's composition (sim/step_cost.py pim_packed_load), integer tokens."""
        from tokenstack_sim.sim.step_cost import pim_packed_load

        load, rounds = pim_packed_load(np.asarray(toks, np.float64), self.n)
        return self.T(self.n * math.ceil(load - 1e-6)) + (rounds - 1) * self.T(FIXED_TOKENS)

    def all(self, toks) -> dict[str, float]:
        return {"serial": self.serial(toks), "packed": self.packed(toks), "scope-max": self.scope_max(toks),
                "closed": self.closed(toks)}


def rows(seeds: int):
    from tokenstack_sim.hw.dram.run import warmup

    warmup()
    out = []
    for key in DEVICES:
        dev = Device(key)
        for dist in ("uniform", "equal"):
            for B in BATCHES:
                for seed in range(seeds if dist == "uniform" else 1):
                    toks = draw(dist, B, seed)
                    k, thr = dev.kernel(toks)
                    out.append(dict(device=key, scopes=dev.n, dist=dist, B=B, seed=seed, tokens=sum(toks),
                                    t_max=max(toks), kernel=k, throttled=thr, **dev.all(toks)))
    return out


def err(r, f):
    return r[f] / r["kernel"] - 1.0


def regime(r) -> str:
    """B < n (striped), n <= B < 2n (one or two sequences a scope), B >= 2n (several rounds)."""
    B, n = r["B"], r["scopes"]
    return "B<n" if B < n else ("n<=B<2n" if B < 2 * n else "B>=2n")


def table(rs, markdown: bool) -> str:
    head = ["device", "scopes", "tokens/seq", "B", "sum tokens", "kernel us"] + [f"{f} us (err)" for f in FORMULAS]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    else:
        lines.append("  ".join(f"{h:>18}" if i >= 3 else f"{h:<12}" for i, h in enumerate(head)))
    for r in rs:
        if r["seed"] != 0:
            continue
        dist = "U(64,2048)" if r["dist"] == "uniform" else "256"
        cells = [r["device"], str(r["scopes"]), dist, str(r["B"]), f"{r['tokens']:,}", f"{r['kernel'] / 1e3:,.2f}"]
        cells += [f"{r[f] / 1e3:,.2f} ({100 * err(r, f):+.0f}%)" for f in FORMULAS]
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("  ".join(f"{c:>18}" if i >= 3 else f"{c:<12}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def summary(rs, markdown: bool) -> str:
    """Signed error range per formula, device and regime, over every seed."""
    groups: dict[tuple, list] = {}
    for r in rs:
        if r["B"] == 1:
            continue  # every formula is T(t) itself
        groups.setdefault((r["device"], r["dist"], regime(r)), []).append(r)
    head = ["device", "tokens/seq", "regime", "points"] + [f"{f} err min..max" for f in FORMULAS]
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(FORMULAS)) + "|"]
    for (dev, dist, reg), g in groups.items():
        cells = [dev, "U(64,2048)" if dist == "uniform" else "256", reg, str(len(g))]
        for f in FORMULAS:
            e = [100 * err(r, f) for r in g]
            cells.append(f"{min(e):+.0f}..{max(e):+.0f}%")
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(f"{c:<20}" for c in cells))
    overall = []
    for f in FORMULAS:
        e = [abs(err(r, f)) for r in rs if r["B"] > 1]
        overall.append(f"{f} max |err| {100 * max(e):.1f}%")
    lines.append(("\n" if markdown else "") + "all B > 1: " + "; ".join(overall)
                 + f"; largest throttled share {max(r['throttled'] for r in rs):.1%}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="draws of the uniform batches (table shows seed 0)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rs = rows(args.seeds)
    print(table(rs, args.markdown))
    print()
    print(summary(rs, args.markdown))
    print(f"\n{len(rs)} kernel runs in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
