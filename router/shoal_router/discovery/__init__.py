"""Where endpoints come from: static URLs (server.default_sources) or Kubernetes EndpointSlices."""
