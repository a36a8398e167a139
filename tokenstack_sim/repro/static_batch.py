"""AttAcc's own protocol: a static batch of B identical requests, driven through the step model directly.

What is modelled: B requests of `input_tokens` prompt tokens each start together; one prefill step runs
all B prompts (B x input tokens in one batch, each emitting its first token), then `output_tokens - 1`
decode steps, each decoding one token of every request at contexts input .. input + output - 2 (so each
request emits `output_tokens` tokens). Every step is `StepModel.step` (sim/step_cost.py) with no KV
placement bound (`request_ids=None`): each request's KV is spread over the system's KV tiers in
proportion to their blocks, as the step model's default. Time = the sum of the step times; energy = the
steps' counted actions x the energy tables plus static power x that time (`sim.engine.energy_pj`).
Throughput = B x output tokens / time (end to end), and the decode-only figures over the decode steps.

Capacity: with `check_capacity` the batch must fit the KV blocks the engine gives the pair after
weights and activations (sim/engine.py kv_tiers; `max_batch`); without it (AttAcc's protocol, labelled
"static, no capacity check") the pool is overridden to hold the batch (`kv_blocks`), so the KV tiers
are as large as needed and no request is refused or preempted.

Left out: the serving engine's scheduling (no chunked prefill, no admission, no preemption), arrivals,
CPU overhead, the activation memory of a prefill larger than the engine's profiled 8,192-token step,
and AttAcc's own pipelining of GPU and PIM work across steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StaticBatch:
    system: str
    model: str
    batch: int
    input_tokens: int
    output_tokens: int
    capacity_checked: bool
    fits: bool
    max_batch: int | None = None  # the largest batch the KV blocks hold (None: weights do not fit)
    reason: str = ""
    prefill_s: float = math.nan
    decode_s: float = math.nan
    energy_j: dict = field(default_factory=dict)  # component -> J over the whole batch (static included)
    decode_energy_j: dict = field(default_factory=dict)  # component -> J of the decode steps alone
    decode_parts: dict = field(default_factory=dict)  # results.result.STEP_PARTS name -> s over the decode steps
    steps: int = 0

    @property
    def time_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens(self) -> int:
        return self.batch * self.output_tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.time_s if self.fits else math.nan

    @property
    def decode_tokens_per_s(self) -> float:
        n = self.batch * (self.output_tokens - 1)
        return n / self.decode_s if self.fits and self.decode_s > 0 else math.nan

    @property
    def energy_per_token_j(self) -> float:
        return sum(self.energy_j.values()) / self.tokens if self.fits else math.nan

    @property
    def decode_energy_per_token_j(self) -> float:
        n = self.batch * (self.output_tokens - 1)
        return sum(self.decode_energy_j.values()) / n if self.fits and n else math.nan


def blocks_per_request(input_tokens: int, output_tokens: int, block_size: int) -> int:
    """KV blocks one request holds at its last step: its input and all but its last output token (the
    last token is emitted, never fed back), in whole blocks."""
    return math.ceil((input_tokens + output_tokens - 1) / block_size)


def max_batch(prep, input_tokens: int, output_tokens: int) -> int | None:
    """The largest batch whose KV fits the pair's blocks (None when the weights do not fit)."""
    if not prep.fits:
        return None
    per = blocks_per_request(input_tokens, output_tokens, prep.step_model.block_size)
    return sum(t.blocks for t in prep.tiers) // per


def _energy(system, vec: np.ndarray, span_s: float) -> dict:
    """Component -> J of one summed action vector over `span_s` (static power included)."""
    from tokenstack_sim.sim.engine import energy_pj
    from tokenstack_sim.sim.step_cost import COMPONENTS, OFFSET

    actions = {}
    for comp, names in COMPONENTS.items():
        arr = np.zeros(1, np.dtype([(a, np.float64) for a in names]))
        for i, a in enumerate(names):
            arr[a] = vec[OFFSET[comp] + i]
        actions[comp] = arr
    return {c: sum(v.values()) * 1e-12 for c, v in energy_pj(system, actions, span_s).items()}


def prepared(system, model, batch: int, input_tokens: int, output_tokens: int, *, check_capacity: bool,
             options=None, bind: bool = True):
    """The engine's prepared pair: its own KV pool with the capacity check, else a pool holding the batch."""
    from tokenstack_sim.sim.engine import prepare
    from tokenstack_sim.sim.step_cost import EngineOptions

    options = options or EngineOptions()
    if check_capacity:
        return prepare(system, model, options=options, bind=bind)
    probe = prepare(system, model, options=options, bind=False)
    if not probe.fits:
        return probe
    need = batch * blocks_per_request(input_tokens, output_tokens, probe.step_model.block_size)
    return prepare(system, model, options=options, kv_blocks=max(need, sum(t.blocks for t in probe.tiers)))


def run_static(system, model, batch: int, input_tokens: int, output_tokens: int, *, check_capacity: bool,
               options=None, prep=None) -> StaticBatch:
    """One static batch (module docstring). `system`, `model`: loaded configs or preset names."""
    from tokenstack_sim.config.loader import load_config

    if batch < 1:
        raise ValueError(f"batch: expected at least 1 request, got {batch}")
    if input_tokens < 1 or output_tokens < 1:
        raise ValueError(f"input/output tokens: expected at least 1 each, got {input_tokens}/{output_tokens}")
    if isinstance(system, str):
        system = load_config(system, kind="system")
    if isinstance(model, str):
        model = load_config(model, kind="model")
    prep = prep or prepared(system, model, batch, input_tokens, output_tokens, check_capacity=check_capacity,
                            options=options)
    res = StaticBatch(system.name, model.config.name, batch, input_tokens, output_tokens, check_capacity,
                      fits=prep.fits, reason=prep.reason)
    if not prep.fits:
        return res
    # the largest batch the system's own pool holds (not the enlarged pool of the unchecked protocol)
    own = prep if prep.kv_blocks is None else prepared(system, model, 1, input_tokens, output_tokens,
                                                         check_capacity=True, options=prep.options, bind=False)
    res.max_batch = max_batch(own, input_tokens, output_tokens)
    if check_capacity and batch > res.max_batch:
        res.fits = False
        res.reason = (f"{batch} requests of {input_tokens}+{output_tokens} tokens need "
                      f"{batch * blocks_per_request(input_tokens, output_tokens, prep.step_model.block_size):,} KV "
                      f"blocks; {system.name} holds {sum(t.blocks for t in prep.tiers):,} (at most {res.max_batch} requests)")
        return res
    from tokenstack_sim.results.result import STEP_PARTS

    sm = prep.step_model
    sm.kv = None  # proportional spread over the tiers (module docstring)
    bs = sm.block_size
    ones = np.ones(batch)
    t, _, vec, _, _ = sm.step(np.full(batch, float(input_tokens)), np.zeros(batch), ones,
                              batch * math.ceil(input_tokens / bs))
    res.prefill_s = float(t)
    pre_vec = vec.copy()
    dec_vec = np.zeros_like(vec)
    dec_s = 0.0
    parts = np.zeros(len(STEP_PARTS))
    for j in range(1, output_tokens):
        ctx = input_tokens + j - 1  # tokens already cached when the j-th output token's step runs
        t, p, vec, _, _ = sm.step(ones, np.full(batch, float(ctx)), ones, batch * math.ceil((ctx + 1) / bs))
        dec_s += float(t)
        dec_vec += vec
        parts += np.asarray(p, np.float64)
    res.decode_s = dec_s
    res.decode_parts = dict(zip(STEP_PARTS, parts.tolist()))
    res.steps = output_tokens
    res.energy_j = _energy(system, pre_vec + dec_vec, res.time_s)
    res.decode_energy_j = _energy(system, dec_vec, dec_s)
    return res
