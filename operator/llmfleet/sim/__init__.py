"""Simulation: the vLLM-compatible engine simulator (`llmfleet engine-sim`) and its continuous-batching performance model."""
