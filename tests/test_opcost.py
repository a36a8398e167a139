"""Characterized op costs: agreement with the kernel at held-out points, refusal outside the grid, and
a cache whose key follows exactly the fields (and code) an op depends on."""

from __future__ import annotations

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.opcost import OpCosts, OpSpec, characterize
from tokenstack_sim.hw.opcost import cache
from tokenstack_sim.hw.opcost.simulate import refresh_interval, simulate_op, size_breaks

TS = "hbm4-12h-tokenstack"
from tokenstack_sim.hw.opcost.table import _geometric

# the default grids' spacing (x sqrt 2), cut short to keep the tests fast
SMALL = {"sizes": _geometric(4096, 1 << 20, 4096), "shares": [0.0, 0.2]}
SMALL_TOKENS = {"sizes": _geometric(16, 4096, 1), "shares": [0.0, 0.2]}


@pytest.fixture(scope="module", autouse=True)
def _warm(dram_warm):
    return dram_warm


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENSTACK_CACHE", str(tmp_path))
    return tmp_path


def stack(*ov):
    return load_config(TS, list(ov), kind="stack")


# The contract is 5% of the kernel at held-out sizes and loads. It holds at load 0 and, under
# load, for streams of at least LONG_NS; the bounds below are the known gaps (issue 6 stays open for
# them) that characterize.py's module docstring states and scripts/bench_ops.py --scan measures: shorter
# ops under load (a few hundred ns, where one write drain, one background request or one refresh is a
# large share of the op: a 66 KB DMA under 0.2 spreads by 37% a draw, so the mean of <= 16 draws is rough
# by ~9%) within SHORT_TOL, and DMAs and attention under load within LOADED_TOL (their refresh overhead
# under load is measured at sizes x4 apart from <= 16 draws whose refresh delays spread widely, and has
# structure between them: 1k-2k-token attention under 0.2, 22% precisely, 6% measured at 1,024 tokens,
# the table 7-9% low; a dequantizing DMA under 0.2, 32 / 41 / 31% at 383 / 556 / 700 KB).
LONG_NS = 2000.0
SHORT_TOL = 0.25
LOADED_TOL = 0.12


def _within(err: float, kernel_ns: float, share: float, op=None) -> bool:
    if share == 0:
        return abs(err) <= 0.05
    if kernel_ns < LONG_NS:
        return abs(err) <= SHORT_TOL
    return abs(err) <= (LOADED_TOL if op is not None and op.kind in ("dma", "attention") else 0.05)


@pytest.mark.validation
@pytest.mark.parametrize("op,grid", [
    (OpSpec("stream", tier="capacity"), SMALL),
    (OpSpec("dma", src="pim", dst="capacity", fmt="int8"), {**SMALL, "shares": [0.0]}),
    (OpSpec("dma", src="pim", dst="capacity", fmt="int8"), SMALL),  # the write drains under load
    (OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True), SMALL),
    (OpSpec("attention", heads=8, gqa=8), SMALL_TOKENS)])
def test_table_matches_kernel_at_held_out_sizes_and_loads(op, grid):
    """The issue's contract: at held-out sizes, on the load levels and at held-out loads between them
    (half-way and random), the table is within 5% of the kernel: under load, of the kernel's expected
    time over the background's draws (simulate.py), the same function the table was made from."""
    st = stack()
    tab = characterize(st, op, grid)
    assert tab.validation, "characterization must check itself at held-out points"
    between = tab.meta["validation_between_levels"]
    assert len(grid["shares"]) == 1 or between
    for size, share, kernel_ns, table_ns, err in list(tab.validation) + list(between):
        assert _within(err, kernel_ns, share, op), (size, share, kernel_ns, table_ns)
    # and at points of our own choosing: between grid points, at each level and half-way between levels
    shares = list(tab.shares) + [float(a + b) / 2 for a, b in zip(tab.shares[:-1], tab.shares[1:])]
    for size in (grid["sizes"][2] * 1.5, grid["sizes"][-2] * 1.3):
        size = round(size)
        for share in shares:
            k, _, _ = simulate_op(st, op, float(size), float(share))
            t = float(tab.time(size, share))
            assert _within((t - k) / k, k, share, op), (size, share, k, t)


@pytest.mark.unit
def test_lookups_are_vectorized_and_refuse_to_extrapolate():
    st = stack()
    tab = characterize(st, OpSpec("stream", tier="pim"), SMALL)
    sizes = np.array([0, 1000, 50_000, 1 << 20])
    t = tab.time(sizes, np.array([0.0, 0.2, 0.1, 0.0]))
    assert t.shape == (4,) and t[0] == 0 and np.all(np.diff(t[[0, 1, 3]]) > 0)
    # a load between levels is linear in share on either side of the interval's middle, where the share
    # shape puts it, at each level the level's own line in size
    lo, hi = float(tab.shares[0]), float(tab.shares[1])
    t0, t2 = float(tab.time(50_000, lo)), float(tab.time(50_000, hi))
    shape = tab.share_shape[0]
    g = float(np.interp(np.log(50_000), np.log(shape["sizes"]), shape["g"]))
    assert float(tab.time(50_000, (lo + hi) / 2)) == pytest.approx(t0 + g * (t2 - t0), rel=1e-12)
    assert float(tab.time(50_000, 0.75 * lo + 0.25 * hi)) == pytest.approx(t0 + g / 2 * (t2 - t0), rel=1e-12)
    with pytest.raises(InputError, match="never extrapolated"):
        tab.time((1 << 20) + 1)
    with pytest.raises(InputError, match="load share"):
        tab.time(4096, 0.25)
    counts = tab.action_counts(np.array([65536.0]))
    assert counts["gpu_read_bits"][0] == pytest.approx(65536 * 8)


@pytest.mark.unit
def test_missing_cost_fails_loudly_then_cache_serves_it(cache_tmp):
    st = stack()
    op = OpSpec("stream", tier="capacity")
    with pytest.raises(InputError, match="tokenstack characterize"):
        OpCosts(st).table(op, SMALL)
    made = OpCosts(st, on_missing="characterize")
    t1 = made.table(op, SMALL)
    assert made.origin[op.op_id] == "kernel"
    files = list(cache_tmp.glob("*.json"))
    assert len(files) == 1 and not list(cache_tmp.glob("*.tmp*"))
    again = OpCosts(st)  # error mode: now found
    t2 = again.table(op, SMALL)
    assert again.origin[op.op_id] == "cache"
    assert np.array_equal(t1.time_ns[0], t2.time_ns[0])


@pytest.mark.unit
def test_cache_key_follows_what_the_op_reads(monkeypatch):
    grid = SMALL
    stream, attn = OpSpec("stream", tier="capacity"), OpSpec("attention", heads=8, gqa=8)

    def key(op, *ov, src="S"):
        return cache.op_key(stack(*ov), op, grid, sources_hash=src)

    base_s, base_a = key(stream), key(attn)
    # irrelevant fields: the same key
    assert key(stream, "area.die_mm2=99") == base_s
    assert key(stream, 'description="other words"') == base_s
    assert key(stream, "pim.lanes=32") == base_s  # streams do not touch PIM units
    assert key(attn, "basedie.quant_lanes=4") == base_a  # attention does not quantize
    # relevant fields: a new key
    assert key(attn, "pim.lanes=32") != base_a
    assert key(stream, 'dram_set=["timing.tRCD_RD_ns=25"]') != base_s
    assert key(stream, "layout.pim_dies=8") != base_s
    assert key(stream, "power.budget_w=20") != base_s
    # the model's code and numba
    assert key(stream, src="T") != base_s
    import numba

    monkeypatch.setattr(numba, "__version__", "0.0.1")
    assert key(stream) != base_s


@pytest.mark.unit
def test_source_hash_covers_the_kernel():
    assert "hw/dram/kernels.py" in cache.MODEL_SOURCES
    assert len(cache.source_hash()) == 64


@pytest.mark.validation
def test_cost_is_the_expectation_over_where_the_op_starts_in_its_refresh_interval(monkeypatch):
    """An op starts anywhere in the refresh interval: its cost is the mean over that, not the time of an
    op that starts just after a refresh (which, shorter than tREFI, never meets one)."""
    from tokenstack_sim.hw.opcost import simulate as S

    st = stack()
    ns, cycles = refresh_interval(st)
    trfc = st.dram.n["nRFC"] * st.dram.tck_ns
    op = OpSpec("stream", tier="capacity")
    c0, n_ch = S._slice(st, op)
    # an op longer than the interval: the mean over 32 evenly spread starts (brute force)
    size = 12e6
    brute = np.mean([S._simulate_once(st, op, size, 0.0, None, "poisson", 0, c0, n_ch, in_progress=True,
                                      phase_cycles=int((k + 0.5) / 32 * cycles))[0] for k in range(32)])
    t, _, det = simulate_op(st, op, size, 0.0)
    assert det["off_ns"] > ns and t == pytest.approx(brute, rel=0.02)
    # a short op: it meets a refresh with probability t_off / tREFI and then waits at least tRFC
    dma = OpSpec("dma", src="pim", dst="capacity", fmt="int8")
    t, _, det = simulate_op(st, dma, 300e3, 0.0)
    off = det["off_ns"]
    assert off < ns / 4
    phase0 = simulate_op(st, dma, 300e3, 0.0, refresh="phase0")[0]
    assert phase0 == simulate_op(st, dma, 300e3, 0.0, refresh="off")[0] == off
    assert t >= off + off / ns * trfc
    monkeypatch.setattr(S, "REFRESH_PHASES", 32)  # where in the op the refresh falls, finely
    monkeypatch.setattr(S, "BUSY_PHASES", 16)
    assert t == pytest.approx(simulate_op(st, dma, 300e3, 0.0)[0], rel=0.02)
    monkeypatch.undo()
    # short ops against brute force: 256 starts spread over the interval, those in its first tRFC waiting
    # for the refresh that opened it (a 60 KB demotion: +14% over leaving that window out)
    c0, n_ch = S._slice(st, dma)
    for size in (20e3, 60e3):
        brute = np.mean([S._simulate_once(st, dma, size, 0.0, None, "poisson", 0, c0, n_ch, in_progress=True,
                                          phase_cycles=int((k + 0.5) / 256 * cycles))[0] for k in range(256)])
        t, _, det = simulate_op(st, dma, size, 0.0)
        assert t == pytest.approx(brute, rel=0.02)
        assert t > det["off_ns"] * (1 + trfc / ns / 4)  # the window's share of a refresh's wait, at least
    # the table follows it over sizes where the op goes from meeting no refresh to meeting several
    grid = {"sizes": [0] + _geometric(1 << 20, 16 << 20, 4096)[1:], "shares": [0.0]}  # the default spacing
    tab = characterize(st, op, grid)
    rng = np.random.default_rng(7)
    for size in rng.uniform(1 << 20, 16 << 20, 6).round():
        k, _, _ = simulate_op(st, op, float(size), 0.0)
        assert float(tab.time(size)) == pytest.approx(k, rel=0.05)
    with pytest.raises(InputError, match="refresh"):
        simulate_op(st, op, 4096.0, 0.0, refresh="sometimes")


@pytest.mark.unit
def test_share_shape_bends_the_interpolation_between_levels():
    """Between two levels the look-up is linear in share on either side of the interval's middle, where
    the share shape puts the time (g of the way from the lower level's time to the upper's), g
    interpolated in log size between its probe sizes; the levels themselves are untouched."""
    from tokenstack_sim.hw.opcost.table import OpTable

    sizes = np.array([0.0, 1000.0, 100000.0])
    tab = OpTable("t", "bytes", np.array([0.0, 0.2]), [sizes, sizes],
                  [np.array([0.0, 100.0, 1000.0]), np.array([0.0, 200.0, 3000.0])],
                  share_shape=[{"sizes": [1000.0, 100000.0], "g": [0.5, 0.9]}])
    assert float(tab.time(1000.0, 0.1)) == pytest.approx(150.0)  # g = 0.5: the straight line
    assert float(tab.time(100000.0, 0.1)) == pytest.approx(1000 + 0.9 * 2000)
    assert float(tab.time(100000.0, 0.05)) == pytest.approx(1000 + 0.45 * 2000)  # half-way to the middle
    assert float(tab.time(100000.0, 0.15)) == pytest.approx(1000 + 0.95 * 2000)
    assert float(tab.time(10000.0, 0.1)) == pytest.approx(float(np.interp(10000.0, sizes, [0, 150, 2000]))
                                                          + 0.2 * float(np.interp(10000.0, sizes, [0, 100, 2000])))
    for share in (0.0, 0.2):
        assert float(tab.time(100000.0, share)) == (1000.0 if share == 0 else 3000.0)
    again = OpTable.from_json(tab.to_json())
    assert float(again.time(100000.0, 0.1)) == float(tab.time(100000.0, 0.1))
    plain = OpTable.from_json({**tab.to_json(), "share_shape": []})  # no shape: linear in share
    assert float(plain.time(100000.0, 0.1)) == pytest.approx(2000.0)


@pytest.mark.unit
def test_refresh_expectation_follows_the_refresh_mode():
    """Per-bank refresh: the interval is tREFIpb; no refresh: the expectation is the op without refresh."""
    op = OpSpec("stream", tier="capacity")
    none = stack("dram.refresh.mode=none")
    assert refresh_interval(none) is None
    assert simulate_op(none, op, 65536.0, 0.0)[0] == simulate_op(none, op, 65536.0, 0.0, refresh="off")[0]
    pb = stack("dram.refresh.mode=per_bank")
    assert refresh_interval(pb)[1] == pb.dram.n["nREFIpb"]
    off = simulate_op(pb, op, 65536.0, 0.0, refresh="off")[0]
    assert off < refresh_interval(pb)[0]  # shorter than the interval: phase 0 never meets a refresh
    assert simulate_op(pb, op, 65536.0, 0.0, refresh="phase0")[0] == off < simulate_op(pb, op, 65536.0, 0.0)[0]


@pytest.mark.unit
def test_ensure_in_parallel_equals_serial_characterization(cache_tmp):
    st = stack()
    ops = [OpSpec("stream", tier="capacity"), OpSpec("dma", src="pim", dst="capacity", fmt="int8")]
    grid = {"sizes": _geometric(4096, 256 << 10, 4096), "shares": [0.0, 0.1]}  # short: it characterizes twice
    lines = []
    costs = OpCosts(st, progress=lines.append)  # error mode: ensure() characterizes anyway
    got = costs.ensure(ops, workers=2, grid=grid)
    assert [t.op_id for t in got] == [op.op_id for op in ops]
    assert all(costs.origin[op.op_id] == "kernel" for op in ops)
    assert len(list(cache_tmp.glob("*.json"))) == 2 and not list(cache_tmp.glob("*.tmp*"))
    assert any("2 worker processes" in m for m in lines)
    assert all(any(m.startswith(op.op_id) for m in lines) for op in ops)  # workers' progress came back
    for op, tab in zip(ops, got):
        ref = characterize(st, op, grid)
        assert np.array_equal(tab.shares, ref.shares)
        for a, b, c, d in zip(tab.sizes, ref.sizes, tab.time_ns, ref.time_ns):
            assert np.array_equal(a, b) and np.array_equal(c, d)
        assert tab.actions.keys() == ref.actions.keys()
        assert all(np.array_equal(tab.actions[k], ref.actions[k]) for k in ref.actions)
        assert [tuple(v) for v in tab.validation] == [tuple(v) for v in ref.validation]
    again = OpCosts(st)
    assert [t.op_id for t in again.ensure(ops, grid=grid)] == [op.op_id for op in ops]
    assert all(again.origin[op.op_id] == "cache" for op in ops)  # nothing left to characterize


@pytest.mark.unit
def test_ensure_with_one_worker_runs_in_process(cache_tmp, monkeypatch):
    from tokenstack_sim.hw.opcost import parallel

    def boom(*a, **k):
        raise AssertionError("no worker processes for one worker")

    monkeypatch.setattr(parallel, "characterize_parallel", boom)
    st = stack()
    ops = [OpSpec("stream", tier="capacity"), OpSpec("stream", tier="pim")]
    grid = {**SMALL, "shares": [0.0]}  # what runs where, not the loaded levels (tested above)
    costs = OpCosts(st)
    costs.ensure(ops, workers=1, grid=grid)
    assert costs.on_missing == "error"  # restored
    assert [costs.origin[o.op_id] for o in ops] == ["kernel", "kernel"]
    # one missing op (the other two cached), workers by default: in process too
    ops3 = ops + [OpSpec("dma", src="pim", dst="capacity", fmt="int8")]
    costs3 = OpCosts(st)
    costs3.ensure(ops3, grid=grid)
    assert [costs3.origin[o.op_id] for o in ops3] == ["cache", "cache", "kernel"]


@pytest.mark.unit
def test_background_length_never_changes_the_answer():
    """simulate_op sizes the background from a guess; a wrong guess costs a rerun, never another time."""
    st = stack()
    for op, size in ((OpSpec("stream", tier="capacity"), 300_000.0), (OpSpec("attention", heads=8, gqa=8), 700.0),
                     (OpSpec("dma", src="pim", dst="capacity", fmt="int8"), 77_777.0)):
        t, _, det = simulate_op(st, op, size, 0.2)
        for guess in (t / 10, t, 10 * t):
            t2, _, det2 = simulate_op(st, op, size, 0.2, expect_ns=guess)
            assert t2 == t and det2["off_ns"] == det["off_ns"]


@pytest.mark.validation
def test_refinement_splits_where_the_line_misses_and_holds_at_dense_held_out_sizes(monkeypatch):
    import importlib

    ch = importlib.import_module("tokenstack_sim.hw.opcost.characterize")
    monkeypatch.setattr(ch, "DENSE_TOL", float("inf"))  # the refinement alone, without the fine tabulation
    st = stack()
    op = OpSpec("stream", tier="pim")
    grid = {**SMALL, "shares": [0.0]}
    tab = characterize(st, op, grid)
    assert tab.dense_max == [0.0]
    info = tab.meta["refine"][0]
    assert info["checked"] > 0 and info["split"] > 0 and info["left"] == 0
    assert len(tab.sizes[0]) > len(grid["sizes"])
    quantum = 32 * 32  # one access on each of the 32 channels
    assert all(x % quantum == 0 for x in tab.sizes[0])
    rng = np.random.default_rng(11)
    for size in np.exp(rng.uniform(np.log(8192), np.log(1 << 20), 16)).round():
        k, _, _ = simulate_op(st, op, float(size), 0.0)
        assert float(tab.time(size)) == pytest.approx(k, rel=0.05), size


@pytest.mark.unit
def test_between_level_checks_are_recorded():
    st = stack()
    tab = characterize(st, OpSpec("attention", heads=8, gqa=8), SMALL_TOKENS)
    between = tab.meta["validation_between_levels"]
    mids = {round((a + b) / 2, 12) for a, b in zip(tab.shares[:-1], tab.shares[1:])}
    half = [v for v in between if round(v[1], 12) in mids]
    drawn = [v for v in between if round(v[1], 12) not in mids]
    assert half and drawn  # half-way for every other held-out size, a random share for the others
    assert all(0.0 < v[1] < 0.2 and v[1] not in tab.shares for v in drawn) and len({v[1] for v in drawn}) > 1
    assert all(v[3] == float(tab.time(v[0], v[1])) for v in between)
    assert tab.max_rel_error_between_levels == max(abs(v[4]) for v in between)


@pytest.mark.unit
def test_size_breaks_bound_runs_of_the_same_op():
    """simulate.size_breaks: every size in (previous break, break] is the op of the break (same time under
    load, where the sawtooth would show a mistake), and the time changes somewhere across breaks."""
    st = stack()
    rng = np.random.default_rng(5)
    for op in (OpSpec("dma", src="pim", dst="capacity", fmt="int8"), OpSpec("stream", tier="pim"),
               OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True)):
        breaks = size_breaks(st, op, 96 * 1024)
        assert np.all(np.diff(breaks) > 0) and breaks[-1] <= 96 * 1024
        times = []
        for i in rng.choice(np.arange(1, len(breaks)), 6, replace=False):
            lo, hi = breaks[i - 1], breaks[i]
            t_hi = simulate_op(st, op, float(hi), 0.2)[0]
            times.append(t_hi)
            for x in (lo + 1, (lo + hi) / 2):
                assert simulate_op(st, op, float(x), 0.2)[0] == t_hi, (op.op_id, x, lo, hi)
        assert len(set(times)) > 1


@pytest.mark.validation
def test_expected_time_under_load_smooths_the_write_drain_teeth():
    """One realization of the background gives a DMA under load teeth between neighbouring sizes (its
    last writes drain at the watermark or wait for the write-age timer, and which background requests
    fall inside it moves with the size): 16% off their own line at 300 KB under 0.1 (measured); the
    expectation over draws (the default) stays within 2.7% there."""
    from tokenstack_sim.hw.opcost.simulate import size_quantum

    st = stack()
    op = OpSpec("dma", src="pim", dst="capacity", fmt="int8")
    q = size_quantum(st, op)
    xs = 300e3 + q * np.arange(8)

    def stray(background):
        # without refresh: the background's teeth alone (several refreshed runs a realization would smooth
        # one realization too)
        t = np.array([simulate_op(st, op, float(x), 0.1, background=background, refresh="off")[0] for x in xs])
        return float(np.max(np.abs(t - np.polyval(np.polyfit(xs, t, 1), xs))) / t.min())

    assert stray("random") > 0.10
    assert stray("poisson") < 0.04


@pytest.mark.unit
def test_first_write_drain_step_is_in_the_loaded_grid():
    """Under load a short DMA whose slice writes the drain watermark's worth of lines drains at once; one
    line fewer waits for the write-age timer (simulate.write_drain_step): a step of 35-54% of the op's time
    without refresh (the loaded levels hold both sides), 18-45% of its expected time with refresh (a
    refresh's wait, up to tRFC plus the background's backlog, is a large share of a 200 ns op)."""
    from tokenstack_sim.hw.opcost.simulate import write_drain_step

    st = stack()
    for op in (OpSpec("dma", src="pim", dst="capacity", fmt="int8"),
               OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True)):
        before, after = write_drain_step(st, op)
        assert after - before == 32  # one byte per channel
        for share in (0.1, 0.2):
            t_before = simulate_op(st, op, before, share, refresh="off")[0]
            t_after = simulate_op(st, op, after, share, refresh="off")[0]
            assert t_after < 0.7 * t_before, (op.op_id, share, t_before, t_after)
            assert simulate_op(st, op, after, share)[0] < 0.85 * simulate_op(st, op, before, share)[0]
    with pytest.raises(InputError, match="DMA"):
        write_drain_step(st, OpSpec("stream", tier="pim"))


@pytest.mark.validation
def test_table_interpolates_between_load_levels_at_held_out_shares():
    """The issue's contract between levels: at held-out load shares (half-way between the table's levels,
    and random shares) and held-out sizes, the look-up (linear in share between the two levels around it)
    is within 5% of the kernel. Checked on a PIM-tier stream, for ops of at least 2 us (every op kind at
    and between levels: test_table_matches_kernel_at_held_out_sizes_and_loads)."""
    st = stack()
    op = OpSpec("stream", tier="pim")
    grid = {"sizes": _geometric(4096, 8 << 20, 4096), "shares": [0.0, 0.1, 0.2]}
    tab = characterize(st, op, grid)
    assert tab.meta["share_checks"]  # every interval between levels was checked
    assert len(tab.share_shape) == len(tab.shares) - 1 and all(tab.share_shape)  # and has its shape
    rng = np.random.default_rng(21)
    checked = 0
    for j in range(1, len(tab.shares)):
        lo, hi = float(tab.shares[j - 1]), float(tab.shares[j])
        for share in ((lo + hi) / 2, float(rng.uniform(lo, hi))):
            for size in np.exp(rng.uniform(np.log(3e6), np.log(8e6), 2)):
                k, _, _ = simulate_op(st, op, float(size), share)
                if k < 2000:
                    continue
                checked += 1
                assert float(tab.time(size, share)) == pytest.approx(k, rel=0.05), (size, share)
    assert checked >= 8


@pytest.mark.unit
def test_background_is_the_expectation_over_poisson_draws_by_default():
    """The default load model: Poisson arrivals of random lines, the cost the mean over a fixed sequence
    of draws (seeded by op and draw, not by size or share), so the op's cost is a deterministic function
    of (size, share) that rises with the load. One sequential sweep falls into step with a sequential
    op (not monotonic in load); one realization of random lines ("random") is kept to compare."""
    st = stack()
    op = OpSpec("stream", tier="capacity")
    mean = [simulate_op(st, op, 1.79e6, s)[0] for s in (0.0, 0.05, 0.1, 0.15, 0.2)]
    seq = [simulate_op(st, op, 1.79e6, s, background="sequential")[0] for s in (0.1, 0.2, 0.3)]
    assert np.all(np.diff(mean) > 0)
    assert not np.all(np.diff(seq) >= 0)
    t, _, det = simulate_op(st, op, 1.79e6, 0.1)
    assert det["background"] == "poisson" and det["draws"] == len(det["draw_times_ns"]) >= 1
    assert t == pytest.approx(np.mean(det["draw_times_ns"]), rel=1e-12)
    assert simulate_op(st, op, 1.79e6, 0.1) == simulate_op(st, op, 1.79e6, 0.1)  # seeded, not drawn
    assert simulate_op(st, op, 1.79e6, 0.1, background="random")[2]["draws"] == 1
    with pytest.raises(InputError, match="background"):
        simulate_op(st, op, 1.79e6, 0.1, background="bursty")


@pytest.mark.validation
def test_load0_dma_follows_its_write_drain_teeth_between_grid_sizes():
    """At load 0 an INT8 demotion's time is a sawtooth in size (~30 ns teeth: whether its last writes
    drain at once or wait for the write-age timer), with periods an 8-size probe can miss; the load-0
    level is tabulated at every break while the DMA lasts under DENSE_DMA_NS (before: 23% off at sizes
    between 32 and 500 KB, e.g. 82,048 B: table 186.7 ns, kernel 218.0 ns)."""
    st = stack()
    op = OpSpec("dma", src="pim", dst="capacity", fmt="int8")
    tab = characterize(st, op, {**SMALL, "shares": [0.0]})
    rng = np.random.default_rng(5)
    sizes = np.concatenate([[82_048.0], np.exp(rng.uniform(np.log(32 << 10), np.log(1 << 20), 300)).round()])
    for size in sizes:
        k, _, _ = simulate_op(st, op, float(size), 0.0)
        assert float(tab.time(size)) == pytest.approx(k, rel=0.05), size


@pytest.mark.unit
def test_steady_sizes_under_load_follow_an_affine_line(monkeypatch):
    """Sizes whose op outlasts STEADY_NS alone are not simulated under load: their time is the line, in
    the load-0 time, through the simulated sizes below. Affine, not a ratio: an op that pays a fixed
    cost under load (attention under 0.2 pays ~1 us) would otherwise carry that cost's share of a
    32 us op into every longer one."""
    import importlib

    ch = importlib.import_module("tokenstack_sim.hw.opcost.characterize")

    def fake(stack, op, x, share, expect_ns=None, refresh="expected", **kw):  # 10 ns a token, +1 us loaded
        return 10.0 * x + (1000.0 if share > 0 else 0.0), {}, {"draws": 1}

    monkeypatch.setattr(ch, "simulate_op", fake)
    st, op = stack(), OpSpec("attention", heads=8, gqa=8)
    sizes0 = np.array(_geometric(16, 65536, 1), np.float64)
    xs0, ts0, _, _ = ch._fit_level(st, op, sizes0, 0.0, "tokens")
    xs, ts, _, info = ch._fit_level(st, op, sizes0, 0.2, "tokens", ch._Expect(xs0, ts0), (xs0, ts0))
    steady = xs >= info["steady_from"]
    assert steady.sum() >= 3 and xs[-1] == 65536
    np.testing.assert_allclose(ts[steady], 10.0 * xs[steady] + 1000.0, rtol=1e-9)
    assert info["steady_affine"] == pytest.approx([1.0, 1000.0])
    assert info["steady_ratio"] > 1.03  # the ratio rule would have put 64k tokens 3% high


@pytest.mark.unit
def test_knee_pass_follows_the_largest_miss_towards_the_step():
    """Under load the refinement's budget can end with a knee inside one wide segment; the knee pass
    checks both halves of the worst miss and follows the one that misses more."""
    import importlib

    ch = importlib.import_module("tokenstack_sim.hw.opcost.characterize")

    step_at = 1_110_000.0
    seen = []

    def sim(x):  # 2 us below the step, 3.3 us above it (an INT8 demotion under 0.15 has such a knee)
        seen.append(x)
        return (2000.0 + x / 1e4 if x < step_at else 3300.0 + x / 1e4, {})

    a, b, m = 1_048_576.0, 1_572_864.0, 1_310_720.0
    line = (sim(a)[0] + sim(b)[0]) / 2
    info = ch._knee_pass(sim, lambda x: 1.0, [(abs(line - sim(m)[0]) / sim(m)[0], a, b, m)], 4096.0)
    assert info["knee_checked"] == 2 * ch.KNEE_DEPTH
    left = max(x for x in seen if x < step_at)
    right = min(x for x in seen if x >= step_at)
    assert right - left <= (m - a) / 2 ** (ch.KNEE_DEPTH - 1)  # the step is bracketed ever more tightly
    # misses on short ops (their draws' noise) or small misses start nothing
    assert ch._knee_pass(lambda x: (500.0, {}), lambda x: 1.0, [(0.3, a, b, m)], 4096.0)["knee_checked"] == 0
    assert ch._knee_pass(sim, lambda x: 1.0, [(0.05, a, b, m)], 4096.0)["knee_checked"] == 0


@pytest.mark.validation
@pytest.mark.parametrize("refresh", [False, True])
def test_a_whole_stack_run_takes_the_one_channel_slice_s_time_at_load_0(refresh):
    """Characterized costs simulate one channel and scale it by channel symmetry (simulate.py). At load 0
    that is what the whole-stack kernel does: each source's in-order requests enter one stream per
    channel (hw/stack/dma.per_channel_streams), so a channel never waits for another's full queue and
    a quantizing DMA's writes are spaced by their own channel's quantizers. Exact for streams and copies of
    whole interleave chunks per channel, and for attention; quantizing DMAs of 1 and 16 MB within 5% (a written line's data comes from reads on other
    channels; a 128 KB one is +7.1%, its lines falling unevenly on the channels: scripts/bench_symmetry.py).
    One in-order stream over the stack, before: an INT8 demotion of 16 MB +36% over the slice, a copy +8%."""
    from tokenstack_sim.hw.opcost.simulate import _slice, simulate_whole_stack
    from tokenstack_sim.hw.stack.dma import DmaJob, GpuStream
    from tokenstack_sim.hw.stack.pim import attention_programs
    from tokenstack_sim.hw.stack.run import run_stack

    st = stack()
    mode = "phase0" if refresh else "off"  # the whole-stack run starts just after a refresh, too
    exact = [(OpSpec("stream", tier="capacity"), 1 << 20), (OpSpec("stream", tier="pim"), 16 << 20),
             (OpSpec("dma", src="capacity", dst="pim"), 1 << 20), (OpSpec("dma", src="pim", dst="capacity"), 16 << 20),
             (OpSpec("attention", heads=8, gqa=8), 1024), (OpSpec("attention", heads=8, gqa=8), 8192)]
    quantizing = [(OpSpec("dma", src="pim", dst="capacity", fmt="int8"), 1 << 20),
                  (OpSpec("dma", src="pim", dst="capacity", fmt="int8"), 16 << 20),
                  (OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True), 1 << 20),
                  (OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True), 16 << 20)]
    for (op, size), tol in [(c, 1e-9) for c in exact] + [(c, 0.05) for c in quantizing]:
        sliced = simulate_op(st, op, float(size), 0.0, refresh=mode)[0]
        assert _slice(st, op)[1] == st.dram.org.channels  # these tiers span every channel
        if op.kind == "stream":
            # as simulate_op runs a stream: a foreground source beside the (here absent) background
            whole = run_stack(st, foreground=GpuStream(size, tier=op.tier), refresh=refresh).foreground_time_ns
        elif op.kind == "dma":
            job = DmaJob(size, src=op.src, dst=op.dst, fmt=op.fmt, dequantize=op.dequantize)
            whole = run_stack(st, dma=[job], refresh=refresh).dma_time_ns
        else:
            progs = attention_programs(st, tokens=size, kv_heads=op.heads, gqa=op.gqa, head_dim=op.head_dim,
                                       kv_bytes=op.kv_bytes)
            whole = run_stack(st, programs=progs, refresh=refresh).op_time_ns[0]
        assert whole == pytest.approx(sliced, rel=tol), (op.op_id, size)
        if not refresh and op.kind == "dma":  # the same run, as simulate_whole_stack makes it
            assert simulate_whole_stack(st, op, float(size), 0.0)[0] == whole
    # the expectation over where the op starts in its refresh interval, as the slice's: runs at the same phases
    attn = exact[4][0]
    t_w, a_w, _ = simulate_op(st, attn, 1024.0, 0.0, whole=True)
    t_s, a_s, _ = simulate_op(st, attn, 1024.0, 0.0)
    assert t_w == pytest.approx(t_s, rel=1e-9) and a_w == pytest.approx(a_s, rel=1e-9)  # the stack's actions, both
    mean, ts = simulate_whole_stack(st, exact[0][0], 1 << 20, 0.2, seeds=2)  # under load: one time a seed
    assert len(ts) == 2 and mean == pytest.approx(np.mean(ts)) and min(ts) > simulate_op(st, exact[0][0], 1 << 20,
                                                                                        0.0, refresh="off")[0]


@pytest.mark.unit
def test_each_source_enters_one_stream_per_channel():
    """In-order requests get a stream per (source, channel); an open-loop background stays stream 0."""
    from tokenstack_sim.hw.stack.dma import DMA_READ, DMA_WRITE, GPU, SOURCES, per_channel_streams

    kind = np.array([GPU, GPU, DMA_READ, DMA_READ, DMA_WRITE, DMA_WRITE])
    ch = np.array([5, 9, 3, 9, 3, 9])
    stream, groups = per_channel_streams(kind, ch, open_loop=False)
    assert groups == 3 and stream.tolist() == [GPU + SOURCES * 1, GPU + SOURCES * 2, DMA_READ, DMA_READ + SOURCES * 2,
                                               DMA_WRITE, DMA_WRITE + SOURCES * 2]
    stream, groups = per_channel_streams(kind, ch, open_loop=True)  # channels 3 and 9 carry in-order requests
    assert groups == 2 and stream.tolist() == [GPU, GPU, DMA_READ, DMA_READ + SOURCES, DMA_WRITE,
                                               DMA_WRITE + SOURCES]
