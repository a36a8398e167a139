"""Transfers and tensor-parallel all-reduce over a link, with the bytes each moves (for energy).

transfer:   time = latency + bytes / bw,  bytes on the link = bytes.
all-reduce: ring algorithm (reduce-scatter then all-gather, as NCCL's ring): each of p GPUs sends
            2(p-1) chunks of bytes/p to its neighbour, one chunk per step, all GPUs at once, so
            time = 2(p-1)/p * bytes / bw + 2(p-1) * latency, and the link bytes summed over all GPUs are
            2(p-1)/p * bytes * p = 2(p-1) * bytes. p = 1 costs nothing.
`bw` is the link's bandwidth per direction times its achievable fraction: in a ring each GPU sends and
receives at once, on different directions. Left out: tree/NVLS algorithms, switch contention, the
reduction arithmetic (small next to the transfer), and chunk pipelining latency.
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


def allreduce_time_s(link: ResolvedLink, nbytes, tp):
    """Ring all-reduce of `nbytes` per GPU over `tp` GPUs: 2(p-1)/p * bytes / bw + 2(p-1) * latency."""
    b = _bytes(nbytes)
    p = _tp(tp)
    t = np.where((p > 1) & (b > 0), 2 * (p - 1) / p * b / link.effective_bw_Bps + 2 * (p - 1) * link.latency_s, 0.0)
    return _out(t, nbytes, tp)


def allreduce_link_bytes(nbytes, tp):
    """Bytes moved over links by a ring all-reduce, summed over all p GPUs: 2(p-1) * bytes."""
    b = _bytes(nbytes)
    p = _tp(tp)
    return _out(2 * (p - 1) * b, nbytes, tp)


def link_energy_pj(link: ResolvedLink, link_bytes):
    """Energy of bytes moved over the link: bytes x 8 x pJ/bit."""
    return _out(_bytes(link_bytes, "link_bytes") * BITS_PER_BYTE * link.config.energy_pj_per_bit, link_bytes)
