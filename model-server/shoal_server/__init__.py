"""shoal's model-server: an OpenAI-compatible front for vLLM (or a simulated engine).

Admission control, graceful drain and metrics live here; the engines live in `shoal_server.engines`.
"""
