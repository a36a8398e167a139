"""Design points of a sweep: every combination (grid), independent draws (random) or a Latin hypercube.

`design(dims, method, points, seed, cross)` returns a list of {dimension name: value} dicts.

- grid: the Cartesian product of every dimension's values, in the order the dimensions are given (the
  last varies fastest). Ranges are refused by the spec reader before this.
- random: `points` draws; each dimension gets its own uniform u in [0, 1) per point.
- lhs: `points` draws stratified per dimension: u = (a random permutation of 0..points-1 + a uniform
  offset) / points, so each dimension's points fall one in each of `points` equal slices (McKay et al.
  1979). Plain numpy: scipy is not a dependency of this package.
- A u becomes a value by the dimension's domain: a list takes element floor(u * len) (each value one
  n-th of the slices); a range takes min + u (max - min) (log-uniform with `log`); an integer range
  takes floor(min + u (max - min + 1)). Drawn floats are rounded to 6 significant digits, so that a
  point's parameters (and its id) read the same in every file.
- `cross`: dimensions taken out of the draw and crossed, value by value, with every drawn point
  (e.g. `qps`, to trace a throughput-latency curve at each drawn design).

One numpy Generator seeded with `seed` draws everything, dimension by dimension in the given order, so
the same spec gives the same points. Leaves out: optimized (maximin) hypercubes, Sobol sequences,
constraints between dimensions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tokenstack_sim.sweep.spec import Dim

SIGNIFICANT_DIGITS = 6


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def value_at(dim: Dim, u: float):
    """The value of `dim` at the unit coordinate u in [0, 1)."""
    if dim.range is None:
        return dim.values[min(int(u * len(dim.values)), len(dim.values) - 1)]
    r = dim.range
    if r.integer:
        lo, hi = int(r.min), int(r.max)
        if r.log:
            return min(int(math.floor(math.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))), hi)
        return min(lo + int(math.floor(u * (hi - lo + 1))), hi)
    if r.log:
        return _round(math.exp(math.log(r.min) + u * (math.log(r.max) - math.log(r.min))))
    return _round(r.min + u * (r.max - r.min))


def unit_coordinates(method: str, points: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """(points, dims) coordinates in [0, 1): independent uniforms, or Latin-hypercube strata."""
    if method == "random":
        return rng.random((points, dims))
    if method == "lhs":
        u = np.empty((points, dims))
        for j in range(dims):
            u[:, j] = (rng.permutation(points) + rng.random(points)) / points
        return u
    raise ValueError(f"method must be 'random' or 'lhs' here, got {method!r}")


def design(dims: tuple[Dim, ...] | list[Dim], method: str = "grid", points: int | None = None, seed: int = 0,
           cross: tuple[str, ...] = ()) -> list[dict]:
    """The design points (module docstring), each a dict over every dimension in `dims`."""
    dims = list(dims)
    if method == "grid":
        for d in dims:
            if d.range is not None:
                raise ValueError(f"{d.name}: a grid needs values, not a range")
        names = [d.name for d in dims]
        return [dict(zip(names, combo)) for combo in itertools.product(*(d.values for d in dims))]
    if not points or points < 1:
        raise ValueError(f"{method} sampling needs points >= 1")
    crossed = [d for d in dims if d.name in cross]
    drawn = [d for d in dims if d.name not in cross]
    u = unit_coordinates(method, points, len(drawn), np.random.default_rng(seed))
    out = []
    for i in range(points):
        base = {d.name: value_at(d, float(u[i, j])) for j, d in enumerate(drawn)}
        for combo in itertools.product(*(d.values for d in crossed)):
            point = dict(base)
            point.update(zip((d.name for d in crossed), combo))
            out.append({d.name: point[d.name] for d in dims})  # keep the spec's dimension order
    return out
