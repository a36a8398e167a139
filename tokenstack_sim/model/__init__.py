"""The LLM model layer: shapes (sizes derived from a model config) and the ops of one serving iteration."""
