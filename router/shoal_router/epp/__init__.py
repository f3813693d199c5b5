"""The Endpoint Picker (EPP): shoal's picking core behind Envoy's ext_proc protocol (Gateway API Inference
Extension, proposal 004). A second front end beside the HTTP proxy; it picks, the gateway forwards."""
