"""Engines behind the OpenAI layer: `vllm` (real) and `sim` (simulated continuous batching)."""
