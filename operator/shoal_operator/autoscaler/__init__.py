"""shoal's autoscaler: Prometheus metrics → a pure policy → the InferenceService scale subresource."""
