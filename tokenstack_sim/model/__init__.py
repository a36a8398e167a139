"""The LLM model layer: sizes derived from a model config (`shapes`) and the ops of one serving
iteration per tensor-parallel shard (`ops`)."""

from tokenstack_sim.model.ops import (FIELDS, OP_DTYPE, STEP_OPS, IterationModel, IterationOps, check_tp,
                                      expected_experts_touched, iteration_ops)

__all__ = ["FIELDS", "OP_DTYPE", "STEP_OPS", "IterationModel", "IterationOps", "check_tp",
           "expected_experts_touched", "iteration_ops"]
