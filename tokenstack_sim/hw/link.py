"""Transfers and tensor-parallel all-reduce over a link, with the bytes each moves (for energy).

transfer:   time = latency + bytes / bw,  bytes on the link = bytes.
all-reduce, by algorithm (p = 1 costs nothing):
  ring      reduce-scatter then all-gather, as NCCL's ring: each of p GPUs sends 2(p-1) chunks of
            bytes/p to its neighbour, one chunk per step, all GPUs at once, so
            time = 2(p-1)/p * bytes / bw + 2(p-1) * latency; link bytes over all GPUs 2(p-1) * bytes.
  one_shot  every GPU reads the p-1 peers' whole buffers and reduces locally (vLLM's custom all-reduce,
            one-stage kernel, used for small messages on fully connected NVLink; csrc/custom_all_reduce.cuh):
            time = (p-1) * bytes / bw + 2 * latency (a barrier before and after); link bytes p(p-1) * bytes.
  two_shot  reduce-scatter then all-gather by direct peer reads (the two-stage kernel, larger messages):
            time = 2(p-1)/p * bytes / bw + 4 * latency; link bytes 2(p-1) * bytes.
  auto      the fastest of the three for each message, as vLLM / NCCL pick by size.
`bw` is the link's bandwidth per direction times its achievable fraction: each GPU sends and receives at
once, on different directions. Left out: tree/NVLS algorithms, switch contention, the reduction
arithmetic (small next to the transfer), and chunk pipelining latency.
Bad input (negative or NaN bytes, a tensor-parallel degree that is not an integer >= 1) is an InputError
naming the argument.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.config.link import ResolvedLink
from tokenstack_sim.errors import InputError
from tokenstack_sim.units import BITS_PER_BYTE


def _out(x, *inputs):
    return float(x) if all(np.ndim(i) == 0 for i in inputs) else x


def _bytes(nbytes, where: str = "nbytes") -> np.ndarray:
    b = np.asarray(nbytes, dtype=np.float64)
    if not np.all(b >= 0):  # also refuses NaN
        bad = b[~(b >= 0)].flat[0]
        raise InputError(f"bytes must be >= 0, got {bad:g}", where=where)
    return b


def _tp(tp) -> np.ndarray:
    p = np.asarray(tp, dtype=np.float64)
    if not np.all((p >= 1) & (p == np.floor(p))):
        bad = p[~((p >= 1) & (p == np.floor(p)))].flat[0]
        raise InputError(f"tensor-parallel degree must be an integer >= 1, got {bad:g}", where="tp")
    return p


def transfer_time_s(link: ResolvedLink, nbytes):
    """One point-to-point transfer of `nbytes` each (0 bytes cost nothing)."""
    b = _bytes(nbytes)
    t = np.where(b > 0, link.latency_s + b / link.effective_bw_Bps, 0.0)
    return _out(t, nbytes)


def transfer_link_bytes(nbytes):
    """Bytes that cross the link for a transfer: the payload."""
    return _out(_bytes(nbytes), nbytes)


ALLREDUCE_ALGORITHMS = ("ring", "one_shot", "two_shot", "auto")


def _allreduce(link: ResolvedLink, b: np.ndarray, p: np.ndarray, algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    bw, lat = link.effective_bw_Bps, link.latency_s
    costs = {"ring": (2 * (p - 1) / p * b / bw + 2 * (p - 1) * lat, 2 * (p - 1) * b),
             "one_shot": ((p - 1) * b / bw + 2 * lat, p * (p - 1) * b),
             "two_shot": (2 * (p - 1) / p * b / bw + 4 * lat, 2 * (p - 1) * b)}
    if algorithm == "auto":
        names = list(costs)
        times = np.stack(np.broadcast_arrays(*(costs[n][0] for n in names)))
        pick = np.argmin(times, axis=0)
        t = np.take_along_axis(times, pick[None], 0)[0]
        moved = np.stack(np.broadcast_arrays(*(costs[n][1] for n in names)))
        m = np.take_along_axis(moved, pick[None], 0)[0]
    elif algorithm in costs:
        t, m = costs[algorithm]
    else:
        raise InputError(f"unknown all-reduce algorithm {algorithm!r}; known: {', '.join(ALLREDUCE_ALGORITHMS)}",
                         where="allreduce")
    active = (p > 1) & (b > 0)
    return np.where(active, t, 0.0), np.where(active, m, 0.0)


def allreduce_time_s(link: ResolvedLink, nbytes, tp, algorithm: str = "ring"):
    """All-reduce of `nbytes` per GPU over `tp` GPUs (see the module docstring for the algorithms)."""
    t, _ = _allreduce(link, _bytes(nbytes), _tp(tp), algorithm)
    return _out(t, nbytes, tp)


def allreduce_link_bytes(nbytes, tp, algorithm: str = "ring", link: ResolvedLink | None = None):
    """Bytes moved over links by an all-reduce, summed over all p GPUs (ring: 2(p-1) * bytes). 'auto'
    needs the `link` to know which algorithm it picks."""
    b, p = _bytes(nbytes), _tp(tp)
    if algorithm == "auto" and link is None:
        raise InputError("the 'auto' all-reduce needs the link to pick its algorithm", where="link")
    if link is None:
        link_bytes = {"ring": 2 * (p - 1) * b, "one_shot": p * (p - 1) * b, "two_shot": 2 * (p - 1) * b}
        if algorithm not in link_bytes:
            raise InputError(f"unknown all-reduce algorithm {algorithm!r}; known: {', '.join(ALLREDUCE_ALGORITHMS)}",
                             where="allreduce")
        return _out(np.where(p > 1, link_bytes[algorithm], 0.0), nbytes, tp)
    _, m = _allreduce(link, b, p, algorithm)
    return _out(m, nbytes, tp)


def link_energy_pj(link: ResolvedLink, link_bytes):
    """Energy of bytes moved over the link: bytes x 8 x pJ/bit."""
    return _out(_bytes(link_bytes, "link_bytes") * BITS_PER_BYTE * link.config.energy_pj_per_bit, link_bytes)
