"""One entry point for many models: several pools (InferenceServices) behind one router, requests routed
by their `model`, weighted splits. Each pool reuses the flow-control core (its own Dispatcher)."""
