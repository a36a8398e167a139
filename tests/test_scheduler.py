"""vLLM-V1-like scheduler, serving loop and metrics on small hand-checked examples."""

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime import SchedulerParams, make_scheduler, serve, summarize
from tokenstack_sim.runtime import scheduler as scheduler_mod
from tokenstack_sim.workload.table import RequestTable, empty_rows

pytestmark = pytest.mark.unit


class Affine:
    """Test-only step cost: a fixed time per step plus a time per computed token."""

    def __init__(self, step_s=0.01, token_s=0.001, check=None):
        self.step_s, self.token_s, self.check = step_s, token_s, check
        self.batches = []

    def step_time_s(self, batch):
        if self.check:
            self.check(batch)
        self.batches.append(batch)
        return self.step_s + self.token_s * int(batch.new_tokens.sum())


def table(inputs, outputs, arrivals=None, trace_hashes=None, hash_block_tokens=0):
    n = len(inputs)
    rows = empty_rows(n)
    rows["input_tokens"] = inputs
    rows["output_tokens"] = outputs
    rows["arrival_s"] = arrivals if arrivals is not None else 0.0
    if trace_hashes is None:
        return RequestTable(rows)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(h) for h in trace_hashes], out=offsets[1:])
    flat = np.array([x for h in trace_hashes for x in h], dtype=np.uint64)
    return RequestTable(rows, offsets, flat, hash_block_tokens)


def test_unknown_scheduler_lists_known_ones():
    with pytest.raises(InputError, match="known: vllm"):
        make_scheduler("orca", table([10], [1]), SchedulerParams(num_kv_blocks=10))


def test_hand_computed_ttft_tpot_with_affine_cost():
    # R0: 40 prompt tokens, 3 outputs, arrives at 0; R1: 20 prompt, 2 outputs, arrives at 15 ms.
    # Budget 32. Step 1 (t=0): R0 chunk 32 -> 10 + 32 ms = 0.042. Step 2: R0 last 8 (emits),
    # R1 admitted with 20 (emits) -> 10 + 28 = 0.080. Step 3: 2 decodes, R1 done -> 0.092.
    # Step 4: R0 decode, done -> 0.103.
    t = table([40, 20], [3, 2], arrivals=[0.0, 0.015])
    res = serve(t, SchedulerParams(num_kv_blocks=100, max_num_batched_tokens=32), Affine())
    req = res.requests
    assert np.allclose(req["first_token_s"], [0.080, 0.080])
    assert np.allclose(req["finish_s"], [0.103, 0.092])
    assert res.steps["new_tokens"].tolist() == [32, 28, 2, 1]
    assert np.allclose(res.steps["end_s"], [0.042, 0.080, 0.092, 0.103])
    m = summarize(req, warmup_frac=0.0, drain_frac=0.0)
    assert m.ttft_s.mean == pytest.approx((0.080 + 0.065) / 2)
    assert m.tpot_s.mean == pytest.approx(((0.103 - 0.080) / 2 + (0.092 - 0.080) / 1) / 2)
    assert m.e2e_s.p50 == pytest.approx((0.103 + 0.077) / 2)
    assert m.output_tokens_per_s == pytest.approx(5 / 0.103)
    assert m.total_tokens_per_s == pytest.approx(65 / 0.103)


def test_warmup_and_drain_drop_requests_by_arrival():
    t = table([8] * 10, [2] * 10, arrivals=np.arange(10.0))
    res = serve(t, SchedulerParams(num_kv_blocks=100), Affine())
    m = summarize(res.requests, warmup_frac=0.2, drain_frac=0.1)
    assert m.requests == 7
    assert m.duration_s == pytest.approx(res.requests["finish_s"][8] - 2.0)
    with pytest.raises(InputError):
        summarize(res.requests, warmup_frac=0.6, drain_frac=0.5)


def test_chunked_prefill_splits_a_long_prompt():
    t = table([100], [3])
    cost = Affine()
    serve(t, SchedulerParams(num_kv_blocks=100, max_num_batched_tokens=32), cost)
    assert [b.new_tokens.tolist() for b in cost.batches] == [[32], [32], [32], [4], [1], [1]]
    assert [b.context_tokens.tolist() for b in cost.batches] == [[0], [32], [64], [96], [100], [101]]
    assert [b.emits.tolist() for b in cost.batches] == [[False], [False], [False], [True], [True], [True]]


def test_partial_prefill_limit_with_a_threshold():
    t = table([64, 64], [1, 1])
    for limit, first_batch in ((1, [16]), (2, [16, 16])):
        cost = Affine()
        p = SchedulerParams(num_kv_blocks=100, long_prefill_token_threshold=16, max_num_partial_prefills=limit)
        res = serve(t, p, cost)
        assert cost.batches[0].new_tokens.tolist() == first_batch
        assert res.requests["output_tokens"].tolist() == [1, 1]


def test_a_prefill_one_token_short_of_done_counts_as_partial():
    # R0 (33 tokens) gets 16 of its prompt per step (threshold 16); after step 2 it is one token short of
    # done: its prefill is still unfinished, so with max_num_partial_prefills = 1 R1 (whose first chunk
    # would be partial too) must wait until step 3, when R0's last prompt token is computed.
    t = table([33, 64], [2, 1])
    cost = Affine()
    p = SchedulerParams(num_kv_blocks=100, long_prefill_token_threshold=16, max_num_partial_prefills=1)
    serve(t, p, cost)
    assert [b.request_ids.tolist() for b in cost.batches[:3]] == [[0], [0], [0, 1]]
    assert [b.new_tokens.tolist() for b in cost.batches[:3]] == [[16], [16], [1, 16]]


def _random_table(n, seed, max_in=300, max_out=60):
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0, 0.5, n))
    return table(rng.integers(1, max_in, n), rng.integers(0, max_out, n), arrivals)


def test_budget_and_max_num_seqs_hold_every_step_and_every_request_finishes_once(monkeypatch):
    finished = []

    class Recording(scheduler_mod.VllmScheduler):
        def finish_step(self, batch, end_time_s):
            done = super().finish_step(batch, end_time_s)
            finished.extend(done.tolist())
            return done

    monkeypatch.setitem(scheduler_mod.SCHEDULERS, "recording", Recording)
    p = SchedulerParams(num_kv_blocks=60, max_num_batched_tokens=64, max_num_seqs=5)

    def check(batch):
        assert batch.num_tokens <= p.max_num_batched_tokens
        assert batch.size <= p.max_num_seqs and batch.num_running <= p.max_num_seqs
        assert np.all(batch.new_tokens >= 1)
        assert len(set(batch.request_ids.tolist())) == batch.size
        assert batch.kv_blocks_in_use <= p.num_kv_blocks

    t = _random_table(120, seed=3)
    res = serve(t, p, Affine(check=check), scheduler="recording")
    assert sorted(finished) == list(range(120))
    assert np.array_equal(res.requests["output_tokens"], t.rows["output_tokens"])
    assert np.all(res.requests["finish_s"] >= res.requests["arrival_s"])
    assert res.counters["preemptions"] > 0  # the pool is small enough to force recompute
    zero = t.rows["output_tokens"] == 0
    assert np.all(np.isnan(res.requests["first_token_s"][zero]))
    assert np.all(np.isfinite(res.requests["first_token_s"][~zero]))


def test_same_inputs_same_result():
    t = _random_table(80, seed=5)
    p = SchedulerParams(num_kv_blocks=50, max_num_batched_tokens=128)
    a, b = serve(t, p, Affine()), serve(t, p, Affine())
    for name in a.requests.dtype.names:
        assert np.array_equal(a.requests[name], b.requests[name], equal_nan=True), name
    assert np.array_equal(a.steps, b.steps)


def _step(s, now):
    batch = s.schedule()
    s.finish_step(batch, now)
    return batch


def test_failed_admission_does_not_preempt():
    # bs 16, 10 blocks: A's 100-token prompt takes 7 blocks; B (100 tokens) needs 7 with 3 free.
    t = table([100, 100], [40, 1])
    s = make_scheduler("vllm", t, SchedulerParams(num_kv_blocks=10))
    s.add_request(0)
    _step(s, 1.0)
    s.add_request(1)
    batch = _step(s, 2.0)
    assert batch.request_ids.tolist() == [0] and batch.preemptions == 0
    assert s.num_waiting == 1 and s.preemptions.sum() == 0


def test_preemption_evicts_the_newest_request_which_resumes_and_rehits_its_prompt():
    # Block 4 tokens, 6 blocks. A and B: 8-token prompts, 8 outputs, both admitted at step 1 (2 blocks
    # each) and both take a 3rd block at step 2. At step 6 A needs a 4th block: B (newest) is preempted;
    # its blocks go to the free queue last-first, so A's new block is B's last (decode) block and B's
    # two prompt blocks survive. B cannot be re-admitted until A finishes at step 8 (it needs 2 new
    # blocks beside its 2 hits with only 2 free, both of them its own hits). Step 9: B hits 8 tokens,
    # recomputes its 5 remaining known tokens (8 + 5 generated - 8) and emits its 6th token; it ends at
    # step 11.
    t = table([8, 8], [8, 8])
    cost = Affine(step_s=1.0, token_s=0.0)
    res = serve(t, SchedulerParams(num_kv_blocks=6, block_size=4), cost)
    req = res.requests
    assert req["preemptions"].tolist() == [0, 1]
    assert req["prefix_hit_tokens"].tolist() == [0, 8]
    assert req["finish_s"].tolist() == [8.0, 11.0]
    assert req["first_token_s"].tolist() == [1.0, 1.0]
    ids = [b.request_ids.tolist() for b in cost.batches]
    assert ids[:5] == [[0, 1]] * 5 and ids[5:8] == [[0]] * 3
    assert cost.batches[5].preemptions == 1
    assert cost.batches[8].new_tokens.tolist() == [5] and cost.batches[8].context_tokens.tolist() == [8]
    assert req["output_tokens"].tolist() == [8, 8]


def test_prefix_sharing_across_requests_reuses_only_the_prompt():
    # 512-token trace blocks; R1 shares R0's first trace block only, R2 has R0's exact prompt and
    # arrives after R0 generated 50 tokens (3 decode blocks' worth): R2 hits R0's 600 // 16 = 37 full
    # prompt blocks and nothing of R0's answer. R3 = 512 tokens identical to a cached chain: the hit is
    # capped at (512 - 1) // 16 = 31 blocks.
    t = table([600, 600, 600, 512], [50, 1, 1, 1], arrivals=[0.0, 10.0, 20.0, 30.0],
              trace_hashes=[[5, 6], [5, 7], [5, 6], [5]], hash_block_tokens=512)
    res = serve(t, SchedulerParams(num_kv_blocks=1000), Affine())
    assert res.requests["prefix_hit_tokens"].tolist() == [0, 512, 592, 496]
    assert res.counters["prefix_hit_tokens"] == 512 + 592 + 496
    off = serve(t, SchedulerParams(num_kv_blocks=1000, enable_prefix_caching=False), Affine())
    assert off.requests["prefix_hit_tokens"].tolist() == [0, 0, 0, 0]


def test_a_request_larger_than_the_pool_is_an_input_error():
    with pytest.raises(InputError, match="needs 7 KV blocks"):
        serve(table([100], [1]), SchedulerParams(num_kv_blocks=5), Affine())


def test_params_reject_bad_values():
    with pytest.raises(InputError, match="max_num_seqs"):
        SchedulerParams(num_kv_blocks=10, max_num_seqs=0)


# ---- an independent, sequential reference: vLLM's schedule() loop transcribed request by request ----
class _RefPool:
    """Free queue as an OrderedDict (head = first), hash map as dict of lists (entry 0 is found)."""

    def __init__(self, n):
        from collections import OrderedDict

        self.free = OrderedDict((b, None) for b in range(n))
        self.ref = [0] * n
        self.hash = [None] * n
        self.map = {}

    def lookup(self, hashes):
        out = []
        for h in hashes:
            if h not in self.map:
                break
            out.append(self.map[h][0])
        return out

    def take(self, b):
        if self.ref[b] == 0:
            del self.free[b]
        self.ref[b] += 1

    def pop(self):
        b, _ = self.free.popitem(last=False)
        h = self.hash[b]
        if h is not None:
            lst = self.map[h]
            if lst[0] == b:
                if len(lst) > 1:
                    lst[0] = lst.pop()
                else:
                    del self.map[h]
            else:
                lst.remove(b)
            self.hash[b] = None
        self.ref[b] = 1
        return b

    def release(self, blocks):
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None

    def register(self, b, h):
        self.hash[b] = h
        self.map.setdefault(h, []).append(b)


class _Ref:
    def __init__(self, t, p):
        from collections import deque

        from tokenstack_sim.kv.request_hashes import RequestHashes

        self.p, self.bs = p, p.block_size
        self.pool = _RefPool(p.num_kv_blocks)
        self.rh = RequestHashes(t, p.block_size) if p.enable_prefix_caching else None
        n = len(t)
        self.inp = t.rows["input_tokens"].tolist()
        self.out = t.rows["output_tokens"].tolist()
        self.gen, self.comp, self.nh = [0] * n, [0] * n, [0] * n
        self.gen_at_admission = [0] * n  # a request is in prefill until it samples a token after admission
        self.blocks = [[] for _ in range(n)]
        self.running, self.waiting = [], deque()

    def ntok(self, r):
        return self.inp[r] + self.gen[r]

    def alloc(self, r, new, hit):
        bs, pool = self.bs, self.pool
        need = -(-(self.comp[r] + new) // bs) - len(self.blocks[r]) - len(hit)
        if need > len(pool.free) - sum(pool.ref[b] == 0 for b in hit):
            return False
        for b in hit:
            pool.take(b)
        self.blocks[r] += hit + [pool.pop() for _ in range(need)]
        if self.rh is not None:
            self.nh[r] = max(self.nh[r], len(hit))
            full = min(self.comp[r] + new, self.ntok(r)) // bs
            hs = self.rh.first(r, full)
            for j in range(self.nh[r], full):
                pool.register(self.blocks[r][j], hs[j])
            self.nh[r] = max(self.nh[r], full)
        return True

    def chunk(self, r, budget):
        new = self.ntok(r) - self.comp[r]
        if self.p.long_prefill_token_threshold:
            new = min(new, self.p.long_prefill_token_threshold)
        return min(new, budget)

    def schedule(self):
        p, budget, out, preempted, i = self.p, self.p.max_num_batched_tokens, [], 0, 0
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            new = self.chunk(r, budget)
            while not self.alloc(r, new, []):
                v = self.running.pop()
                self.pool.release(self.blocks[v])
                self.blocks[v], self.comp[v], self.nh[v] = [], 0, 0
                self.waiting.appendleft(v)
                preempted += 1
                if v == r:
                    break
            else:
                out.append((r, new, self.comp[r]))
                budget -= new
                i += 1
                continue
            break
        if not preempted:
            scheduled = {r: n for r, n, _ in out}
            partial = sum(self.gen[r] == self.gen_at_admission[r] and self.comp[r] + scheduled.get(r, 0) < self.ntok(r)
                          for r in self.running)
            while self.waiting and budget > 0 and len(self.running) < p.max_num_seqs:
                r = self.waiting[0]
                hit = []
                if self.rh is not None:
                    hit = self.pool.lookup(self.rh.first(r, (self.ntok(r) - 1) // self.bs))
                self.comp[r] = len(hit) * self.bs
                new = self.chunk(r, budget)
                is_partial = self.comp[r] + new < self.ntok(r)
                if (is_partial and partial >= p.max_num_partial_prefills) or not self.alloc(r, new, hit):
                    self.comp[r] = 0
                    break
                self.waiting.popleft()
                self.running.append(r)
                self.gen_at_admission[r] = self.gen[r]
                out.append((r, new, self.comp[r]))
                budget -= new
                partial += is_partial
        return out

    def finish(self, out):
        for r, new, _ in out:
            self.comp[r] += new
            if self.comp[r] == self.ntok(r) and self.out[r] > 0:
                self.gen[r] += 1
            if (self.out[r] > 0 and self.gen[r] == self.out[r]) or (self.out[r] == 0 and self.comp[r] >= self.inp[r]):
                self.pool.release(self.blocks[r])
                self.blocks[r] = None
                self.running.remove(r)


@pytest.mark.parametrize("seed, blocks, budget, threshold, partials", [
    (0, 40, 64, 0, 1), (1, 80, 256, 0, 1), (2, 30, 48, 16, 2), (3, 200, 512, 0, 1), (4, 60, 96, 24, 1),
])
def test_vectorized_scheduler_matches_a_sequential_reference(seed, blocks, budget, threshold, partials):
    rng = np.random.default_rng(seed)
    n = 150
    inputs = rng.integers(1, 200, n)
    # Shared prefixes: 64-token trace blocks drawn from a few chains so that requests hit each other.
    roots = rng.integers(1, 2**62, 4)
    hashes = []
    for r in range(n):
        k = -(-int(inputs[r]) // 64)
        shared = rng.integers(0, k + 1)
        chain = [int(roots[r % 4]) + j for j in range(shared)] + [int(rng.integers(2**62, 2**63)) for _ in range(k - shared)]
        hashes.append(chain)
    t = table(inputs, rng.integers(0, 50, n), trace_hashes=hashes, hash_block_tokens=64)
    p = SchedulerParams(num_kv_blocks=blocks, max_num_batched_tokens=budget, max_num_seqs=12,
                        long_prefill_token_threshold=threshold, max_num_partial_prefills=partials)
    s, ref = make_scheduler("vllm", t, p), _Ref(t, p)
    added, step, done = 0, 0, 0
    while done < n:
        while added < min(n, 3 * step + 3):
            s.add_request(added)
            ref.waiting.append(added)
            added += 1
        batch = s.schedule()
        expect = ref.schedule()
        got = list(zip(batch.request_ids.tolist(), batch.new_tokens.tolist(), batch.context_tokens.tolist()))
        assert got == expect, f"step {step}"
        done += len(s.finish_step(batch, float(step)))
        ref.finish(expect)
        step += 1
        assert step < 100_000
    assert s.total_preemptions > 0 or blocks >= 200
    assert s.total_prefix_hit_tokens > 0
    assert np.array_equal(s.generated, t.rows["output_tokens"])


def test_params_build_from_a_config_table():
    from tokenstack_sim.config.schema import build

    p = build(SchedulerParams, {"num_kv_blocks": 4096, "max_num_seqs": 256}, where="scheduler")
    assert p.max_num_seqs == 256 and p.max_num_batched_tokens == 8192 and p.block_size == 16
    with pytest.raises(InputError, match="valid keys here: block_size"):
        build(SchedulerParams, {"num_kv_blocks": 1, "swap_space": 4}, where="scheduler")
    with pytest.raises(InputError, match="required key is missing"):
        build(SchedulerParams, {}, where="scheduler")
