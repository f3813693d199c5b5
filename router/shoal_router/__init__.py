"""shoal's router: an LLM-aware load balancer in front of the model-server replicas of one InferenceService."""
