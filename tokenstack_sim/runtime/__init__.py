"""Runtime layer: serving schedulers behind a small protocol and a registry keyed by name, the serving
loop that drives one over a request table, and latency/throughput metrics.

May import the layers to its left (units, config, hw, model, workload, kv), numpy and numba.
"""

from tokenstack_sim.runtime.metrics import ServeMetrics, summarize
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.runtime.scheduler import SCHEDULERS, Batch, Scheduler, make_scheduler
from tokenstack_sim.runtime.serve_loop import ServeResult, StepCost, serve

__all__ = ["SCHEDULERS", "Batch", "Scheduler", "SchedulerParams", "ServeMetrics", "ServeResult",
           "StepCost", "make_scheduler", "serve", "summarize"]
