"""The cycle-level DRAM kernel (numba).

Models, per channel, a controller with a read queue and a write buffer (write-drain watermarks), an
optional active buffer for requests whose row was opened for them, FR-FCFS (oldest ready row hit
first, then the oldest ready ACT or PRE; a row with queued hits is not closed) or FCFS scheduling,
open- or closed-page policy (auto-precharge when no queued request wants the row), bank state
machines, every timing constraint
of the compiled constraint table (bank, bank group, SID, pseudo-channel and channel scopes, rolling
windows such as tFAW, sibling rules such as tCCD_R), all-bank or per-bank refresh, and HBM's split
row/column command bus. Time jumps from one cycle where something can happen to the next; idle cycles
are never stepped through.

Conventions (DESIGN.md, numba discipline): integer cycles only, no allocation per cycle, no globals;
state lives in arrays passed in by `run.py`.

Timing state (`st`): for every node of the five levels (channel, pseudo-channel, SID, bank group,
bank), the first cycle each command may issue there. Issuing a command raises that cycle at the nodes
its constraints reach; `earliest` takes the maximum over the nodes above an address. A rolling-window
constraint keeps, per node, the cycles of its last `count` prev-commands. The front end offers
requests in trace order (stalling when the target queue is full) or by timestamp (open loop).

Speed: a channel is visited only at cycles where something may happen (`next_try`); each queued
request caches a lower bound of its next command's cycle, valid because timing bounds only grow and
forgotten when its bank changes state, so most requests cost one comparison per visit.

Compile time: only the four smallest helpers on every command's path (`node_ids`, `pick`, `earliest`,
`_raise`) are inlined by numba (`inline="always"`, at the IR level, each call site typed again); the
others are plain calls that LLVM may inline. Inlining all fourteen took 70 s of CPU to compile (the
first `tokenstack demo` of a fresh machine), these four 30 s, none 25 s; kernel speed with four is
within the noise of all fourteen, with none ~10% slower on plain DRAM patterns (bench_dram, CPU time).

Not modelled: power-down and self-refresh states, data-bus ECC, refresh management (RFM), row-hammer
mitigation, bank-group-level refresh.
"""

import numpy as np
from numba import njit

# Command codes: the order of tokenstack_sim.config.dram.COMMANDS.
ACT, PRE, PREA, RD, WR, RDA, WRA, REFAB, REFPB = 0, 1, 2, 3, 4, 5, 6, 7, 8
ACTAB, MACAB, PREAB, PRD, PWR = 9, 10, 11, 12, 13  # PIM all-bank mode and unit transfers
NCMD = 14

# PIM program instructions (rows of `pg_ins`: op, count or row, spacing x FP, energy fJ per command)
OP_ACT, OP_MAC, OP_MAC_BD, OP_GATHER, OP_BCAST, OP_PRE, OP_WAIT = 0, 1, 2, 3, 4, 5, 6
FP = 1024  # fixed-point scale of fractional spacings (cycles x FP)
NEVER = np.int64(1) << np.int64(62)

# Level codes
L_CH, L_PC, L_SID, L_BG, L_BANK = 0, 1, 2, 3, 4


# The static tables and the timing state each travel as one flat int64 array (`tab`, `st`), so that a
# helper call passes two arrays instead of nine: every array argument costs numba an atomic reference
# count increment and decrement, which dominated the scheduler loop before this layout.
# Header of `tab` (positions):
T_DIMS = 0  # 5 values: channels, pseudo-channels per channel, SIDs per PC, bank groups per SID, banks per BG
T_OFF = 5  # 5 values: first node of each level in the node numbering
T_NWIN = 10  # rolling-window constraints
T_MAXW = 11  # largest window
T_NNODES = 12  # nodes of all levels
T_CONS = 13  # -> rows (prev, next, level, latency, sibling) of the plain constraints, sorted by prev
T_CPTR = 14  # -> NCMD + 1 row offsets into those rows, per prev command
T_WINS = 15  # -> rows (level, latency, count, 0) of the window constraints
T_WPREV = 16  # -> NCMD flags per window: the command counts into the window
T_WNEXT = 17  # -> NCMD flags per window: the command waits for the window
T_ST_WH = 18  # in st: window histories, [window][node][slot]
T_ST_WP = 19  # in st: window push counts, [window][node]
T_HEADER = 20
# `st` starts with ready[node * NCMD + cmd]: the first cycle cmd may issue at that node.


@njit(cache=True, inline="always")
def node_ids(tab, c, p, s, g, b):
    """Index of the node of each level (within its level) for one address."""
    i1 = c * tab[T_DIMS + 1] + p
    i2 = i1 * tab[T_DIMS + 2] + s
    i3 = i2 * tab[T_DIMS + 3] + g
    i4 = i3 * tab[T_DIMS + 4] + b
    return c, i1, i2, i3, i4


@njit(cache=True, inline="always")
def pick(level, i0, i1, i2, i3, i4):
    if level == 0:
        return i0
    if level == 1:
        return i1
    if level == 2:
        return i2
    if level == 3:
        return i3
    return i4


@njit(cache=True, inline="always")
def earliest(tab, st, cmd, alevel, c, p, s, g, b):
    """First cycle at which `cmd` addressed down to level `alevel` satisfies every timing constraint.

    With `alevel` below the command's own level it gives a lower bound from the upper levels only,
    which the scheduler uses to skip every request behind one pseudo-channel-wide constraint at once.
    """
    i0, i1, i2, i3, i4 = node_ids(tab, c, p, s, g, b)
    e = st[(tab[T_OFF] + i0) * NCMD + cmd]
    for lvl in range(1, alevel + 1):
        v = st[(tab[T_OFF + lvl] + pick(lvl, i0, i1, i2, i3, i4)) * NCMD + cmd]
        if v > e:
            e = v
    nn = tab[T_NNODES]
    maxw = tab[T_MAXW]
    for w in range(tab[T_NWIN]):
        row = tab[T_WINS] + 4 * w
        lvl = tab[row]
        if tab[tab[T_WNEXT] + w * NCMD + cmd] != 0 and lvl <= alevel:
            node = tab[T_OFF + lvl] + pick(lvl, i0, i1, i2, i3, i4)
            cnt = tab[row + 2]
            pos = st[tab[T_ST_WP] + w * nn + node]
            if pos >= cnt:
                t_ok = st[tab[T_ST_WH] + (w * nn + node) * maxw + pos % cnt] + tab[row + 1]
                if t_ok > e:
                    e = t_ok
    return e


@njit(cache=True, inline="always")
def _raise(st, node, cmd, t_ok):
    k = node * NCMD + cmd
    if st[k] < t_ok:
        st[k] = t_ok


@njit(cache=True)
def record(tab, st, cmd, alevel, c, p, s, g, b, t):
    """Apply the timing consequences of issuing `cmd` at cycle `t`."""
    i0, i1, i2, i3, i4 = node_ids(tab, c, p, s, g, b)
    base = tab[T_CONS]
    for k in range(tab[tab[T_CPTR] + cmd], tab[tab[T_CPTR] + cmd + 1]):
        row = base + 5 * k
        nxt = tab[row + 1]
        lvl = tab[row + 2]
        t_ok = t + tab[row + 3]
        if tab[row + 4] != 0:  # sibling: the other nodes of this level under the same parent
            if lvl <= alevel and lvl > 0:
                me = pick(lvl, i0, i1, i2, i3, i4)
                width = tab[T_DIMS + lvl]
                first = (me // width) * width
                for j in range(first, first + width):
                    if j != me:
                        _raise(st, tab[T_OFF + lvl] + j, nxt, t_ok)
        elif lvl <= alevel:
            _raise(st, tab[T_OFF + lvl] + pick(lvl, i0, i1, i2, i3, i4), nxt, t_ok)
        else:  # a constraint below the command's own level reaches every descendant
            span = 1
            for q in range(alevel + 1, lvl + 1):
                span *= tab[T_DIMS + q]
            first = pick(alevel, i0, i1, i2, i3, i4) * span
            for j in range(first, first + span):
                _raise(st, tab[T_OFF + lvl] + j, nxt, t_ok)
    nn = tab[T_NNODES]
    maxw = tab[T_MAXW]
    for w in range(tab[T_NWIN]):
        row = tab[T_WINS] + 4 * w
        lvl = tab[row]
        if tab[tab[T_WPREV] + w * NCMD + cmd] != 0 and lvl <= alevel:
            node = tab[T_OFF + lvl] + pick(lvl, i0, i1, i2, i3, i4)
            wp = tab[T_ST_WP] + w * nn + node
            st[tab[T_ST_WH] + (w * nn + node) * maxw + st[wp] % tab[row + 2]] = t
            st[wp] += 1


# Fields of a queue entry (one row of a channel's read or write queue), kept together for locality.
F_REQ, F_BANK, F_ROW, F_PC, F_SID, F_BG, F_BA, F_SCOPE, F_ACTIVE, F_PRIO = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
NF = 10
# qnb[c, qi, k], beside qord: the k-th oldest request's next command cannot issue before that cycle.
# Valid because `ready` and the window histories only ever grow, so `earliest` never decreases; reset
# to 0 for every request of a bank whose state changes (which changes the command it needs next).
# Kept in arrival order, contiguous, because the scan reads it for every queued request.


@njit(cache=True)
def _log(log, log_n, t, c, p, s, g, b, cmd, row, col):
    """Append one command to the log; returns the count of commands offered, which exceeds the log's
    size when it was too small (the caller then runs again with a larger one)."""
    if log_n < log.shape[0]:
        log[log_n, 0] = t
        log[log_n, 1] = c
        log[log_n, 2] = p
        log[log_n, 3] = s
        log[log_n, 4] = g
        log[log_n, 5] = b
        log[log_n, 6] = cmd
        log[log_n, 7] = row
        log[log_n, 8] = col
    return log_n + 1


@njit(cache=True)
def _forget_bounds(qa, qord, qnb, qi, qn, c, field, value):
    """Drop the cached lower bounds of the requests whose `field` equals `value` (bank or scope)."""
    for k in range(qn):
        if qa[c, qi, qord[c, qi, k], field] == value:
            qnb[c, qi, k] = 0


@njit(cache=True)
def _bank_changed(qa, qord, qnb, q_n, hits, c, bank, row):
    """Bank `bank` now has `row` open (-1: closed): forget its requests' cached bounds and recount
    the queued requests that hit the open row, in one pass over both queues."""
    for qi in range(2):
        n_hits = 0
        for k in range(q_n[c, qi]):
            sl = qord[c, qi, k]
            if qa[c, qi, sl, F_BANK] == bank:
                qnb[c, qi, k] = 0
                if row >= 0 and qa[c, qi, sl, F_ROW] == row:
                    n_hits += 1
        hits[qi, bank] = n_hits


@njit(cache=True)
def _enqueue(qa, qord, qnb, q_n, c, qi, i, bb, row, p, s, g, b, scope, prio):
    """Append request i to queue qi (0 reads, 1 writes) of channel c.

    Requests stay in their storage slot until served: `qord[c, qi, :n]` lists the occupied slots oldest
    first and `qord[c, qi, n:]` the free ones, so a removal moves slot numbers, not whole entries."""
    slot = qord[c, qi, q_n[c, qi]]
    qnb[c, qi, q_n[c, qi]] = 0
    q_n[c, qi] += 1
    qa[c, qi, slot, F_REQ] = i
    qa[c, qi, slot, F_BANK] = bb
    qa[c, qi, slot, F_ROW] = row
    qa[c, qi, slot, F_PC] = p
    qa[c, qi, slot, F_SID] = s
    qa[c, qi, slot, F_BG] = g
    qa[c, qi, slot, F_BA] = b
    qa[c, qi, slot, F_SCOPE] = scope
    qa[c, qi, slot, F_ACTIVE] = 0
    qa[c, qi, slot, F_PRIO] = prio


@njit(cache=True)
def _power_take(pw, pw_state, pw_stats, t, e_fj):
    """Take `e_fj` from the stack's power bucket at cycle t. Returns 0 when taken, else the first cycle
    at which the bucket will hold enough (nothing taken). The bucket refills at the budget's rate and
    holds at most one window's worth; with the budget off every command passes."""
    if pw[0] == 0:
        return 0
    level = pw_state[0] + (t - pw_state[1]) * pw[1]
    if level > pw[2]:
        level = pw[2]
    pw_state[0] = level
    pw_state[1] = t
    if level >= e_fj:
        pw_state[0] = level - e_fj
        return 0
    pw_stats[0] += 1  # a command held back
    if pw_stats[2] != t:
        pw_stats[1] += 1  # a cycle in which something was held back
        pw_stats[2] = t
    return t + max(1, (e_fj - level + pw[1] - 1) // pw[1])


@njit(cache=True)
def _power_force(pw, pw_state, t, e_fj):
    """Charge energy that cannot wait (refresh): the bucket may go negative and later commands wait."""
    if pw[0] == 0:
        return
    level = pw_state[0] + (t - pw_state[1]) * pw[1]
    if level > pw[2]:
        level = pw[2]
    pw_state[0] = level - e_fj
    pw_state[1] = t


@njit(cache=True)
def _scope_banks(c, level, p, s, NB, BPC, GB):
    """First bank (global numbering) and bank count of a PIM scope: one SID of a pseudo-channel, a
    pseudo-channel, or a channel."""
    if level == 2:
        return c * NB + p * BPC + s * GB, GB
    if level == 1:
        return c * NB + p * BPC, BPC
    return c * NB, NB


@njit(cache=True)
def _refresh_blocks(c, level, p, s, P, S, ref_mode, ref_level, n_scope, ref_pend, pb_pend):
    """True while a refresh waits on any bank of the PIM scope (the program must not reopen rows)."""
    p0, p1 = (p, p + 1) if level >= 1 else (0, P)
    for pp in range(p0, p1):
        if ref_mode == 1:
            if ref_level == 1:
                if ref_pend[c * n_scope + pp]:
                    return True
            else:
                s0, s1 = (s, s + 1) if level == 2 else (0, S)
                for ss in range(s0, s1):
                    if ref_pend[c * n_scope + pp * S + ss]:
                        return True
        elif ref_mode == 2:
            if pb_pend[c * P + pp]:
                return True
    return False


@njit(cache=True)
def _earliest_scope(tab, st, cmd, level, c, p, s, P, S):
    """`earliest` for a command covering a whole scope: constraints recorded at the SIDs and
    pseudo-channels inside a channel- or pseudo-channel-wide scope (refresh, for one) bind it too."""
    if level == 2:
        return earliest(tab, st, cmd, 2, c, p, s, 0, 0)
    e = np.int64(0)
    p0, p1 = (p, p + 1) if level == 1 else (0, P)
    for pp in range(p0, p1):
        for ss in range(S):
            v = earliest(tab, st, cmd, 2, c, pp, ss, 0, 0)
            if v > e:
                e = v
    return e


@njit(cache=True)
def _pim_step(c, t, row_used, col_used, prog_lo, prog_hi, pg_scope, pg_ins, pg_lo, pg_hi, pg_release,
              pg_state, pg_start, pg_done, pg_counts, bank_prog, pim_lock, open_row, dims, tab, st, tim,
              concurrent, ref_mode, ref_level, n_scope, ref_pend, pb_pend, pw, pw_state, pw_stats,
              log, log_n, log_on, qa, qord, qnb, q_n, hits, bank_q):
    """Advance the PIM programs of channel c by at most one command each at cycle t (PIM units and
    base-die transfers share the channel's row and column command slots with everything else).

    Returns (row_used, col_used, wake, log_n, programs finished now)."""
    P, S, G, B = dims[1], dims[2], dims[3], dims[4]
    GB = G * B
    BPC = S * GB
    NB = P * BPC
    nCL, nCWL, nBL = tim[0], tim[1], tim[2]
    wake = NEVER
    finished = 0
    for g in range(prog_lo, prog_hi):
        if pg_state[g, 5] == 2:
            continue
        if pg_release[g] > t:
            wake = min(wake, pg_release[g])
            continue
        L = pg_scope[g, 0]
        p = pg_scope[g, 2]
        s = pg_scope[g, 3]
        b0, nb = _scope_banks(c, L, p, s, NB, BPC, GB)
        if pg_state[g, 5] == 0:  # start: the scope's banks leave the ordinary scheduler
            pg_state[g, 5] = 1
            lb0, lnb = b0, nb
            if not concurrent and L == 2:
                lb0, lnb = c * NB + p * BPC, BPC
            for bb in range(lb0, lb0 + lnb):
                pim_lock[bb] += 1
            for bb in range(b0, b0 + nb):
                bank_prog[bb] = g
        while True:
            pc = pg_state[g, 0]
            if pc >= pg_hi[g]:
                lb0, lnb = b0, nb
                if not concurrent and L == 2:
                    lb0, lnb = c * NB + p * BPC, BPC
                for bb in range(lb0, lb0 + lnb):
                    pim_lock[bb] -= 1
                    if pim_lock[bb] == 0 and bank_q[bb] > 0:
                        _bank_changed(qa, qord, qnb, q_n, hits, c, bb, open_row[bb])
                for bb in range(b0, b0 + nb):
                    bank_prog[bb] = -1
                pg_state[g, 5] = 2
                pg_done[g] = max(t, pg_state[g, 3])
                finished += 1
                wake = min(wake, t + 1)
                break
            op = pg_ins[pc, 0]
            # an instruction starts once the data of the previous one has landed; within one, commands
            # follow each other at their spacing
            ready = (pg_state[g, 2] + FP - 1) // FP
            if pg_state[g, 1] < 0 and pg_state[g, 3] > ready:
                ready = pg_state[g, 3]
            if ready > t:
                wake = min(wake, ready)
                break
            if op == OP_WAIT:
                if pg_state[g, 6] < 0:
                    pg_state[g, 6] = t + pg_ins[pc, 1]
                if pg_state[g, 6] > t:
                    wake = min(wake, pg_state[g, 6])
                    break
                pg_state[g, 6] = -1
                pg_state[g, 0] = pc + 1
                continue
            needs_row = op == OP_MAC or op == OP_MAC_BD
            if op == OP_ACT or op == OP_PRE or (needs_row and pg_state[g, 4] < 0):
                any_open = False
                for bb in range(b0, b0 + nb):
                    if open_row[bb] >= 0:
                        any_open = True
                        break
                if op == OP_PRE and not any_open:
                    pg_state[g, 4] = -1
                    pg_state[g, 0] = pc + 1
                    continue
                if row_used:
                    wake = min(wake, t + 1)
                    break
                if not any_open and _refresh_blocks(c, L, p, s, P, S, ref_mode, ref_level, n_scope,
                                                    ref_pend, pb_pend):
                    wake = min(wake, t + 1)
                    break
                cmd = PREAB if any_open else ACTAB
                row = pg_ins[pc, 1] if op == OP_ACT else pg_state[g, 7]
                e = _earliest_scope(tab, st, cmd, L, c, p, s, P, S)
                if e > t:
                    wake = min(wake, e)
                    break
                e_fj = 0
                if cmd == ACTAB:
                    e_fj = pg_ins[pc, 3] if op == OP_ACT else pg_state[g, 8]
                w = _power_take(pw, pw_state, pw_stats, t, e_fj)
                if w > 0:
                    wake = min(wake, w)
                    break
                record(tab, st, cmd, L, c, p, s, 0, 0, t)
                pg_counts[g, cmd] += 1
                if pg_start[g] < 0:
                    pg_start[g] = t
                if log_on:
                    log_n = _log(log, log_n, t, c, p if L >= 1 else -1, s if L == 2 else -1, -1, -1, cmd,
                                 row if cmd == ACTAB else -1, -1)
                for bb in range(b0, b0 + nb):
                    open_row[bb] = row if cmd == ACTAB else -1
                if cmd == ACTAB:
                    pg_state[g, 4] = row
                    if op == OP_ACT:
                        pg_state[g, 7] = row
                        pg_state[g, 8] = pg_ins[pc, 3]
                        pg_state[g, 0] = pc + 1
                else:
                    pg_state[g, 4] = -1
                    if op == OP_PRE:
                        pg_state[g, 0] = pc + 1
                row_used = True
                wake = min(wake, t + 1)
                break
            # column-slot operations: MAC commands and transfers over the pseudo-channel data bus
            if col_used:
                wake = min(wake, t + 1)
                break
            if pg_state[g, 1] < 0:
                pg_state[g, 1] = pg_ins[pc, 1]
            cmd = MACAB if op == OP_MAC else (PWR if op == OP_BCAST else PRD)
            pp = p
            alevel = L
            if L == 0:  # a channel-wide program moves data on its pseudo-channels in turn
                pp = (pg_ins[pc, 1] - pg_state[g, 1]) % P
                if cmd != MACAB:
                    alevel = 1
            ss = s if L == 2 else 0
            if cmd == MACAB:
                e = _earliest_scope(tab, st, cmd, L, c, p, s, P, S)
            else:
                e = earliest(tab, st, cmd, alevel, c, pp, ss, 0, 0)
            if e > t:
                wake = min(wake, e)
                break
            w = _power_take(pw, pw_state, pw_stats, t, pg_ins[pc, 3])
            if w > 0:
                wake = min(wake, w)
                break
            record(tab, st, cmd, alevel, c, pp, ss, 0, 0, t)
            pg_counts[g, cmd] += 1
            if pg_start[g] < 0:
                pg_start[g] = t
            if log_on:
                log_n = _log(log, log_n, t, c, pp if alevel >= 1 else -1, s if L == 2 else -1, -1, -1, cmd,
                             pg_state[g, 4] if needs_row else -1, -1)
            pg_state[g, 1] -= 1
            pg_state[g, 2] = max(pg_state[g, 2], t * FP) + pg_ins[pc, 2]
            if cmd == PRD:
                pg_state[g, 3] = max(pg_state[g, 3], t + nCL + nBL)
            elif cmd == PWR:
                pg_state[g, 3] = max(pg_state[g, 3], t + nCWL + nBL)
            if pg_state[g, 1] == 0:
                pg_state[g, 1] = -1
                pg_state[g, 0] = pc + 1
            col_used = True
            wake = min(wake, t + 1)
            break
    return row_used, col_used, wake, log_n, finished


@njit(cache=True)
def simulate(
    # requests
    r_ch, r_pc, r_sid, r_bg, r_bank, r_row, r_col, r_write, r_arrive,
    # the stream each request belongs to (0: GPU / host traffic; others e.g. DMA reads, DMA writes) and
    # the request whose data it needs before it may enter (-1: none; a DMA write waits for its read)
    r_stream, r_dep,
    # open-loop ingress of stream 0, per channel: request indices sorted by arrival, [lo, hi) per channel
    ing_order, ing_lo, ing_hi,
    # in-order streams: request indices per stream, [lo, hi) per stream, and per stream [priority
    # (0 = served first), cycles from its dependency's data to entry, entry spacing x FP, queue entries
    # it may hold per channel queue]
    s_order, s_lo, s_hi, s_par,
    # device and constraints (see the `tab` header above) and timing parameters
    tab, tim,
    # controller: [rq, wq, wq_hi, wq_lo, fcfs, closed_page, dual_bus, refresh_mode, refresh_level,
    #              open_loop, requests_per_cycle, log_on, active_buffer, pim_concurrent, pim_first,
    #              write_max_age, refresh_phase, stop_after_foreground, refresh_in_progress]
    ctl,
    # PIM programs, sorted by channel: scope rows (level 0 channel / 1 pseudo-channel / 2 SID, c, p, s),
    # instruction rows (op, count or row, spacing x FP, energy fJ per command), [lo, hi) instructions
    # per program, release cycle per program, [lo, hi) programs per channel
    pg_scope, pg_ins, pg_lo, pg_hi, pg_release, pgc_lo, pgc_hi,
    # the stack's power budget: [on, refill fJ per cycle, bucket fJ], and fJ per ordinary command
    pw, cmd_fj,
    # state (zeroed / NEVER-filled by the caller)
    st, open_row,
    # outputs
    done_cycle, r_miss, bank_counts, scope_counts, log, diag,
    pg_start, pg_done, pg_counts, pw_stats,
):
    """Run every request and PIM program to completion. Returns (end_cycle, log_rows, status);
    status 1 = log too small, 2 = no command could ever issue."""
    C = tab[T_DIMS]
    P = tab[T_DIMS + 1]
    S = tab[T_DIMS + 2]
    G = tab[T_DIMS + 3]
    B = tab[T_DIMS + 4]
    NB = P * S * G * B  # banks per channel
    BPC = S * G * B  # banks per pseudo-channel
    nCL = tim[0]
    nCWL = tim[1]
    nBL = tim[2]
    nREFI = tim[3]
    nREFIpb = tim[4]
    RQ = ctl[0]
    WQ = ctl[1]
    WQ_HI = ctl[2]
    WQ_LO = ctl[3]
    fcfs = ctl[4] != 0
    closed_page = ctl[5] != 0
    dual_bus = ctl[6] != 0
    ref_mode = ctl[7]  # 0 none, 1 all-bank, 2 per-bank
    ref_level = ctl[8]  # 1 pseudo-channel, 2 SID
    open_loop = ctl[9] != 0
    fe_rate = ctl[10]
    log_on = ctl[11] != 0
    # Active buffer (as in Ramulator 2's generic controller): a request whose row this controller
    # activated leaves the read queue / write buffer count, up to AB such requests per channel.
    AB = ctl[12]
    pim_concurrent = ctl[13] != 0  # ordinary requests to other SIDs of a pseudo-channel while a SID computes
    pim_first = ctl[14] != 0  # PIM programs take the command slots before the request queues
    WR_AGE = ctl[15]  # drain writes once the oldest has waited this many cycles (0: never by age)
    # stop once every request of the other streams and every program is done: stream 0 is then an
    # open-loop background whose later requests cannot change them (op-cost runs under load)
    stop_fg = ctl[17] != 0

    n = r_ch.shape[0]
    NS = s_lo.shape[0]
    n_prog = pg_lo.shape[0]
    has_pim = n_prog > 0
    has_prio = False  # any stream served after another (source priority in FR-FCFS)
    for sm in range(NS):
        if s_par[sm, 0] != 0:
            has_prio = True
    # the read queue (qi = 0) and the write buffer (qi = 1) of every channel, in one array so that the
    # scheduler indexes the one it serves instead of aliasing two arrays
    QCAP = max(RQ, WQ) + AB
    qa = np.zeros((C, 2, QCAP, NF), np.int64)
    qord = np.zeros((C, 2, QCAP), np.int64)
    qnb = np.zeros((C, 2, QCAP), np.int64)
    for c in range(C):
        for qi in range(2):
            for k in range(QCAP):
                qord[c, qi, k] = k
    q_act = np.zeros((C, 2), np.int64)  # entries of each queue that sit in the active buffer
    q_cap = np.array([RQ, WQ], np.int64)
    q_n = np.zeros((C, 2), np.int64)  # requests in the read queue (0) and the write buffer (1)
    # queued requests to each bank's open row, per queue: only the queue being served protects a row
    hits = np.zeros((2, C * NB), np.int64)
    bank_q = np.zeros(C * NB, np.int64)  # queued requests (both queues) per bank
    drain = np.zeros(C, np.bool_)
    next_try = np.full(C, NEVER, np.int64)
    q_src = np.zeros((C, 2, NS), np.int64)  # entries of each stream in each queue
    pim_lock = np.zeros(C * NB, np.int64)  # PIM programs holding the bank (no ordinary commands)
    bank_prog = np.full(C * NB, -1, np.int64)  # program whose all-bank row the bank holds
    # per program: instruction, commands left, next command x FP, data-ready cycle, open row, phase
    # (0 waiting, 1 running, 2 done), wait-until cycle, row of the last ACT, its energy
    pg_state = np.zeros((n_prog, 9), np.int64)
    for g in range(n_prog):
        pg_state[g, 0] = pg_lo[g]
        pg_state[g, 1] = -1
        pg_state[g, 4] = -1
        pg_state[g, 6] = -1
        pg_start[g] = -1
    pw_state = np.zeros(2, np.int64)
    pw_state[0] = pw[2]  # the power bucket starts full
    dims = tab[T_DIMS:T_DIMS + 5].copy()
    ing_ptr = ing_lo.copy()
    # per-scan memo of a command's lower bound from channel- and pseudo-channel-level constraints
    gate_val = np.zeros((P, NCMD), np.int64)
    gate_stamp = np.zeros((P, NCMD), np.int64)
    stamp = np.int64(0)

    # refresh bookkeeping: all-bank per scope (pseudo-channel or SID); per-bank round-robin per PC
    n_scope = P if ref_level == 1 else P * S
    per_scope_banks = NB // n_scope
    ref_due = np.full(C * n_scope, NEVER, np.int64)
    ref_pend = np.zeros(C * n_scope, np.bool_)
    pb_due = np.full(C * P, NEVER, np.int64)
    pb_pend = np.zeros(C * P, np.bool_)
    pb_ptr = np.zeros(C * P, np.int64)
    if ref_mode == 1:
        ref_due[:] = max(1, nREFI - ctl[16] % nREFI)  # ctl[16]: how far into its interval refresh starts
        next_try[:] = ref_due[0]
        if ctl[18] != 0:
            # the refresh that opened the interval was issued ctl[16] cycles before cycle 0: within its
            # tRFC it still holds every bank of its scope (otherwise its constraints have expired)
            ph = ctl[16] % nREFI
            for c in range(C):
                for sc in range(n_scope):
                    record(tab, st, REFAB, ref_level, c, sc if ref_level == 1 else sc // S,
                           0 if ref_level == 1 else sc % S, 0, 0, -ph)
    elif ref_mode == 2:
        pb_due[:] = max(1, nREFIpb - ctl[16] % nREFIpb)
        next_try[:] = pb_due[0]

    fe_ptr = s_lo.copy()
    fe_next = np.zeros(NS, np.int64)
    fe_block = np.full(NS, -1, np.int64)  # channel whose full queue stops the stream
    fe_wait = np.full(NS, -1, np.int64)  # request whose data the stream's next entry waits for
    fe_acc = np.zeros(NS, np.int64)  # entry spacing: earliest next entry x FP
    # per stream: does any request wait for another's data, or for a not-before cycle? (skips the checks)
    fe_dep = np.zeros(NS, np.bool_)
    fe_nb = np.zeros(NS, np.bool_)
    for sm in range(NS):
        for k in range(s_lo[sm], s_hi[sm]):
            i = s_order[k]
            if r_dep[i] >= 0:
                fe_dep[sm] = True
            if r_arrive[i] > 0:
                fe_nb[sm] = True
    for sm in range(NS):
        if fe_ptr[sm] >= s_hi[sm]:
            fe_next[sm] = NEVER
    for c in range(C):
        if pgc_lo[c] < pgc_hi[c]:
            for g in range(pgc_lo[c], pgc_hi[c]):
                next_try[c] = min(next_try[c], pg_release[g])
    if open_loop:
        for c in range(C):
            if ing_lo[c] < ing_hi[c]:
                next_try[c] = min(next_try[c], r_arrive[ing_order[ing_lo[c]]])
    log_n = 0
    served = 0
    pg_finished = 0
    end_cycle = np.int64(0)
    t = np.int64(0)

    n_fg = 0
    if stop_fg:
        for i in range(n):
            if r_stream[i] != 0:
                n_fg += 1
    served_fg = 0

    while served < n or pg_finished < n_prog:
        if stop_fg and served_fg >= n_fg and pg_finished >= n_prog:
            break
        # ---- in-order front end, per stream: offer up to fe_rate requests this cycle; a stream stalls on
        # a full queue (or its share of it), on the data of the request it depends on, or on its spacing
        for sm in range(NS):
            if fe_next[sm] > t:
                continue
            fe_next[sm] = NEVER
            for _k in range(fe_rate):
                if fe_ptr[sm] >= s_hi[sm]:
                    break
                i = s_order[fe_ptr[sm]]
                if fe_dep[sm]:
                    d = r_dep[i]
                    if d >= 0:
                        if done_cycle[d] == 0:
                            fe_wait[sm] = d  # woken when d's column command issues
                            break
                        if done_cycle[d] + s_par[sm, 1] > t:
                            fe_next[sm] = done_cycle[d] + s_par[sm, 1]
                            break
                if fe_nb[sm] and r_arrive[i] > t:  # not before this cycle (a DMA waits for its translation)
                    fe_next[sm] = r_arrive[i]
                    break
                if s_par[sm, 2] > 0 and fe_acc[sm] >= (t + 1) * FP:
                    fe_next[sm] = (fe_acc[sm] + FP - 1) // FP
                    break
                c = r_ch[i]
                qi = 1 if r_write[i] else 0
                if q_n[c, qi] - q_act[c, qi] >= q_cap[qi] or q_src[c, qi, sm] >= s_par[sm, 3]:
                    fe_block[sm] = c
                    break
                p = r_pc[i]
                s = r_sid[i]
                bb = c * NB + ((p * S + s) * G + r_bg[i]) * B + r_bank[i]
                _enqueue(qa, qord, qnb, q_n, c, qi, i, bb, r_row[i], p, s, r_bg[i], r_bank[i],
                         c * n_scope + (p if ref_level == 1 else p * S + s), s_par[sm, 0])
                q_src[c, qi, sm] += 1
                if open_row[bb] == r_row[i]:
                    hits[qi, bb] += 1
                bank_q[bb] += 1
                r_arrive[i] = t
                fe_ptr[sm] += 1
                next_try[c] = t
                if s_par[sm, 2] > 0:
                    fe_acc[sm] = max(fe_acc[sm], t * FP) + s_par[sm, 2]
            if (fe_ptr[sm] < s_hi[sm] and fe_block[sm] < 0 and fe_wait[sm] < 0 and fe_next[sm] == NEVER):
                fe_next[sm] = t + 1

        diag[0] += 1  # event cycles visited
        for c in range(C):
            if next_try[c] > t:
                continue
            diag[1] += 1  # channel scheduling passes
            wake = NEVER
            # ---- open-loop ingress: arrived requests enter the queues in arrival order
            if open_loop:
                while ing_ptr[c] < ing_hi[c]:
                    i = ing_order[ing_ptr[c]]
                    if r_arrive[i] > t:
                        break
                    qi = 1 if r_write[i] else 0
                    if q_n[c, qi] - q_act[c, qi] >= q_cap[qi] or q_src[c, qi, 0] >= s_par[0, 3]:
                        break
                    p = r_pc[i]
                    s = r_sid[i]
                    bb = c * NB + ((p * S + s) * G + r_bg[i]) * B + r_bank[i]
                    _enqueue(qa, qord, qnb, q_n, c, qi, i, bb, r_row[i], p, s, r_bg[i], r_bank[i],
                             c * n_scope + (p if ref_level == 1 else p * S + s), s_par[0, 0])
                    q_src[c, qi, 0] += 1
                    if open_row[bb] == r_row[i]:
                        hits[qi, bb] += 1
                    bank_q[bb] += 1
                    ing_ptr[c] += 1

            row_used = False
            col_used = False
            # ---- refresh takes the row-command slot first
            if ref_mode == 1:
                for sc in range(n_scope):
                    gsc = c * n_scope + sc
                    if not ref_pend[gsc]:
                        if ref_due[gsc] > t:
                            wake = min(wake, ref_due[gsc])
                            continue
                        ref_pend[gsc] = True
                    if row_used:
                        wake = min(wake, t + 1)
                        continue
                    p = sc if ref_level == 1 else sc // S
                    s = 0 if ref_level == 1 else sc % S
                    b0 = c * NB + sc * per_scope_banks
                    any_open = False
                    for bb in range(b0, b0 + per_scope_banks):
                        if open_row[bb] >= 0:
                            any_open = True
                            break
                    cmd = PREA if any_open else REFAB
                    e = earliest(tab, st, cmd, ref_level, c, p, s, 0, 0)
                    if e > t:
                        wake = min(wake, e)
                        continue
                    record(tab, st, cmd, ref_level, c, p, s, 0, 0, t)
                    scope_counts[gsc, cmd] += 1
                    _power_force(pw, pw_state, t, cmd_fj[cmd])
                    if cmd == PREA:
                        for bb in range(b0, b0 + per_scope_banks):
                            if open_row[bb] >= 0:
                                open_row[bb] = -1
                                hits[0, bb] = 0
                                hits[1, bb] = 0
                                if bank_prog[bb] >= 0:  # refresh interrupts a PIM row: it reopens later
                                    pg_state[bank_prog[bb], 4] = -1
                        _forget_bounds(qa, qord, qnb, 0, q_n[c, 0], c, F_SCOPE, gsc)
                        _forget_bounds(qa, qord, qnb, 1, q_n[c, 1], c, F_SCOPE, gsc)
                    else:
                        ref_pend[gsc] = False
                        ref_due[gsc] += nREFI
                    if log_on:
                        log_n = _log(log, log_n, t, c, p, s if ref_level == 2 else -1, -1, -1, cmd, -1, -1)
                    row_used = True
                    wake = min(wake, t + 1)
            elif ref_mode == 2:
                for p in range(P):
                    gp = c * P + p
                    if not pb_pend[gp]:
                        if pb_due[gp] > t:
                            wake = min(wake, pb_due[gp])
                            continue
                        pb_pend[gp] = True
                    if row_used:
                        wake = min(wake, t + 1)
                        continue
                    lbk = p * BPC + pb_ptr[gp]
                    bb = c * NB + lbk
                    s = (lbk // (G * B)) % S
                    g = (lbk // B) % G
                    b = lbk % B
                    cmd = PRE if open_row[bb] >= 0 else REFPB
                    e = earliest(tab, st, cmd, 4, c, p, s, g, b)
                    if e > t:
                        wake = min(wake, e)
                        continue
                    record(tab, st, cmd, 4, c, p, s, g, b, t)
                    bank_counts[bb, cmd] += 1
                    _power_force(pw, pw_state, t, cmd_fj[cmd])
                    if log_on:
                        log_n = _log(log, log_n, t, c, p, s, g, b, cmd, open_row[bb] if cmd == PRE else -1, -1)
                    if cmd == PRE:
                        open_row[bb] = -1
                        if bank_prog[bb] >= 0:
                            pg_state[bank_prog[bb], 4] = -1
                        hits[0, bb] = 0
                        hits[1, bb] = 0
                        _forget_bounds(qa, qord, qnb, 0, q_n[c, 0], c, F_BANK, bb)
                        _forget_bounds(qa, qord, qnb, 1, q_n[c, 1], c, F_BANK, bb)
                    else:
                        pb_pend[gp] = False
                        pb_due[gp] += nREFIpb
                        pb_ptr[gp] = (pb_ptr[gp] + 1) % BPC
                    row_used = True
                    wake = min(wake, t + 1)

            # ---- PIM programs of this channel, before the queues when they have priority
            if pim_first and pgc_lo[c] < pgc_hi[c]:
                row_used, col_used, w, log_n, fin = _pim_step(
                    c, t, row_used, col_used, pgc_lo[c], pgc_hi[c], pg_scope, pg_ins, pg_lo, pg_hi, pg_release,
                    pg_state, pg_start, pg_done, pg_counts, bank_prog, pim_lock, open_row, dims, tab, st, tim,
                    pim_concurrent, ref_mode, ref_level, n_scope, ref_pend, pb_pend, pw, pw_state, pw_stats,
                    log, log_n, log_on, qa, qord, qnb, q_n, hits, bank_q)
                wake = min(wake, w)
                pg_finished += fin

            # ---- write-drain mode with watermarks; drain whenever there is nothing to read
            if drain[c]:
                if q_n[c, 1] <= WQ_LO and q_n[c, 0] > 0:
                    drain[c] = False
            elif q_n[c, 1] >= WQ_HI or (q_n[c, 0] == 0 and q_n[c, 1] > 0):
                drain[c] = True
            elif WR_AGE > 0 and q_n[c, 1] > 0:
                oldest = r_arrive[qa[c, 1, qord[c, 1, 0], F_REQ]] + WR_AGE
                if oldest <= t:
                    drain[c] = True  # a write waited too long: drain (then down to the low watermark)
                else:
                    wake = min(wake, oldest)
            if drain[c] and q_n[c, 1] == 0:
                drain[c] = False
            is_wr = drain[c]
            qi = 1 if is_wr else 0
            qn = q_n[c, qi]
            col_cmd = WR if is_wr else RD
            stamp += 1

            # ---- one scan, oldest first: the oldest row hit whose column command is ready, and the
            # oldest request whose ACT (bank closed) or PRE (row conflict) is ready
            pick_col = -1
            pick_row = -1
            prio_col = 0
            prio_row = 0
            row_cmd = -1
            limit = min(1, qn) if fcfs else qn
            diag[2] += limit  # queue entries looked at
            for k in range(limit):
                if qnb[c, qi, k] > t:
                    wake = min(wake, qnb[c, qi, k])
                    continue
                sl = qord[c, qi, k]  # storage slot of the k-th oldest request
                bb = qa[c, qi, sl, F_BANK]
                if has_pim and pim_lock[bb] > 0:
                    continue  # its bank is in PIM mode; the program's end wakes the channel
                row = qa[c, qi, sl, F_ROW]
                orow = open_row[bb]
                is_hit = orow == row
                pr = qa[c, qi, sl, F_PRIO] if has_prio else 0
                if is_hit:
                    if col_used or (pick_col >= 0 and prio_col <= pr):
                        continue  # (col_used: a PIM program took the column slot this cycle)
                    cmd = col_cmd
                else:
                    if row_used or (pick_row >= 0 and prio_row <= pr):
                        continue
                    if orow >= 0 and hits[qi, bb] > 0:
                        # keep a row open while queued requests still hit it; this request waits until
                        # the last hit is served or the bank changes state (both forget the bound)
                        qnb[c, qi, k] = NEVER
                        continue
                    cmd = ACT if orow < 0 else PRE
                p = qa[c, qi, sl, F_PC]
                if ref_mode == 1:
                    if ref_pend[qa[c, qi, sl, F_SCOPE]]:
                        continue
                elif ref_mode == 2:
                    gp = c * P + p
                    if pb_pend[gp] and pb_ptr[gp] == bb - c * NB - p * BPC:
                        continue
                if gate_stamp[p, cmd] != stamp:
                    gate_stamp[p, cmd] = stamp
                    gate_val[p, cmd] = earliest(tab, st, cmd, 1,
                                                c, p, 0, 0, 0)
                if gate_val[p, cmd] > t:
                    qnb[c, qi, k] = gate_val[p, cmd]
                    wake = min(wake, gate_val[p, cmd])
                    continue
                diag[3] += 1  # full timing checks
                e = earliest(tab, st, cmd, 4,
                             c, p, qa[c, qi, sl, F_SID], qa[c, qi, sl, F_BG], qa[c, qi, sl, F_BA])
                if e > t:
                    qnb[c, qi, k] = e
                    wake = min(wake, e)
                    continue
                if is_hit:
                    pick_col = k
                    prio_col = pr
                else:
                    pick_row = k
                    prio_row = pr
                    row_cmd = cmd
                if (col_used or (pick_col >= 0 and prio_col == 0)) and (row_used or (pick_row >= 0 and prio_row == 0)):
                    break

            if pick_col >= 0 and pw[0] != 0:
                w = _power_take(pw, pw_state, pw_stats, t, cmd_fj[col_cmd])
                if w > 0:
                    wake = min(wake, w)
                    pick_col = -1
                    pick_row = -1
            if pick_col >= 0:
                slc = qord[c, qi, pick_col]
                i = qa[c, qi, slc, F_REQ]
                bb = qa[c, qi, slc, F_BANK]
                row = qa[c, qi, slc, F_ROW]
                p = qa[c, qi, slc, F_PC]
                s = qa[c, qi, slc, F_SID]
                g = qa[c, qi, slc, F_BG]
                b = qa[c, qi, slc, F_BA]
                cmd = col_cmd
                hits[qi, bb] -= 1
                if hits[qi, bb] == 0 and bank_q[bb] > 1:  # requests held back by this row may now go
                    _forget_bounds(qa, qord, qnb, qi, qn, c, F_BANK, bb)
                if qa[c, qi, slc, F_ACTIVE]:
                    q_act[c, qi] -= 1
                if closed_page and hits[0, bb] + hits[1, bb] == 0:
                    cmd = WRA if is_wr else RDA  # no other queued request wants this row: auto-precharge
                record(tab, st, cmd, 4, c, p, s, g, b, t)
                bank_counts[bb, cmd] += 1
                if log_on:
                    log_n = _log(log, log_n, t, c, p, s, g, b, cmd, row, r_col[i])
                if cmd == RDA or cmd == WRA:
                    open_row[bb] = -1
                done_cycle[i] = t + (nCWL if is_wr else nCL) + nBL
                end_cycle = max(end_cycle, done_cycle[i])
                served += 1
                if r_stream[i] != 0:
                    served_fg += 1
                q_src[c, qi, r_stream[i]] -= 1
                for sm in range(NS):
                    if fe_wait[sm] == i:  # a stream waited for this request's data
                        fe_wait[sm] = -1
                        fe_next[sm] = done_cycle[i] + s_par[sm, 1]
                for k in range(pick_col, qn - 1):  # remove from the arrival order; free the slot
                    qord[c, qi, k] = qord[c, qi, k + 1]
                    qnb[c, qi, k] = qnb[c, qi, k + 1]
                qord[c, qi, qn - 1] = slc  # the freed slot joins the free part of qord
                qn -= 1
                q_n[c, qi] = qn
                bank_q[bb] -= 1
                if cmd == RDA or cmd == WRA:
                    if bank_q[bb] > 0:
                        _bank_changed(qa, qord, qnb, q_n, hits, c, bb, -1)
                    else:
                        hits[0, bb] = 0
                        hits[1, bb] = 0
                col_used = True
                wake = min(wake, t + 1)
                for sm in range(NS):
                    if fe_block[sm] == c:
                        fe_block[sm] = -1
                        fe_next[sm] = t + 1
                if pick_row > pick_col:
                    pick_row -= 1

            if pick_row >= 0 and (dual_bus or not col_used):
                k = pick_row
                cmd = row_cmd
                slr = qord[c, qi, k]
                bb = qa[c, qi, slr, F_BANK]
                row = qa[c, qi, slr, F_ROW]
                orow = open_row[bb]
                p = qa[c, qi, slr, F_PC]
                s = qa[c, qi, slr, F_SID]
                g = qa[c, qi, slr, F_BG]
                b = qa[c, qi, slr, F_BA]
                # the column command just issued may have moved this command's earliest cycle
                if col_used and earliest(tab, st, cmd, 4,
                                         c, p, s, g, b) > t:
                    pick_row = -1
                elif pw[0] != 0 and _power_take(pw, pw_state, pw_stats, t, cmd_fj[cmd]) > 0:
                    wake = min(wake, t + 1)
                    pick_row = -1
                else:
                    record(tab, st, cmd, 4, c, p, s, g, b, t)
                    bank_counts[bb, cmd] += 1
                    if log_on:
                        log_n = _log(log, log_n, t, c, p, s, g, b, cmd, row if cmd == ACT else orow, -1)
                    if cmd == ACT:
                        open_row[bb] = row
                        r_miss[qa[c, qi, slr, F_REQ]] = 1
                        if q_act[c, 0] + q_act[c, 1] < AB and not qa[c, qi, slr, F_ACTIVE]:
                            qa[c, qi, slr, F_ACTIVE] = 1
                            q_act[c, qi] += 1
                            for sm in range(NS):  # the request left the queue count: room for the front end
                                if fe_block[sm] == c:
                                    fe_block[sm] = -1
                                    fe_next[sm] = t + 1
                    else:
                        open_row[bb] = -1
                    if bank_q[bb] == 1:  # only this request waits on the bank: no scan needed
                        qnb[c, qi, k] = 0
                        hits[qi, bb] = 1 if cmd == ACT else 0
                        hits[1 - qi, bb] = 0
                    else:
                        _bank_changed(qa, qord, qnb, q_n, hits, c, bb, row if cmd == ACT else -1)
                    row_used = True
            # ---- PIM programs after the queues, in the slots they left
            if not pim_first and pgc_lo[c] < pgc_hi[c]:
                row_used, col_used, w, log_n, fin = _pim_step(
                    c, t, row_used, col_used, pgc_lo[c], pgc_hi[c], pg_scope, pg_ins, pg_lo, pg_hi, pg_release,
                    pg_state, pg_start, pg_done, pg_counts, bank_prog, pim_lock, open_row, dims, tab, st, tim,
                    pim_concurrent, ref_mode, ref_level, n_scope, ref_pend, pb_pend, pw, pw_state, pw_stats,
                    log, log_n, log_on, qa, qord, qnb, q_n, hits, bank_q)
                wake = min(wake, w)
                pg_finished += fin
            if (row_used or col_used) or (pick_row >= 0 and not dual_bus):
                wake = min(wake, t + 1)
            if open_loop and ing_ptr[c] < ing_hi[c]:
                wake = min(wake, max(r_arrive[ing_order[ing_ptr[c]]], t + 1))
            next_try[c] = wake

        # ---- jump to the next cycle at which anything can happen
        t_next = NEVER
        for sm in range(NS):
            t_next = min(t_next, fe_next[sm])
        for c in range(C):
            t_next = min(t_next, next_try[c])
        if t_next >= NEVER:
            break  # nothing can ever happen again (only reachable with an inconsistent config)
        t = max(t + 1, t_next)
    end_cycle = max(end_cycle, t)
    for g in range(n_prog):
        end_cycle = max(end_cycle, pg_done[g])
    if (served < n or pg_finished < n_prog) and not (stop_fg and served_fg >= n_fg and pg_finished >= n_prog):
        return end_cycle, min(log_n, log.shape[0]), 2
    return end_cycle, min(log_n, log.shape[0]), 1 if log_n > log.shape[0] else 0
