"""Flow control: the front-end-agnostic picking core shared by the HTTP router and the EPP.

A front end turns a request into a `FlowRequest`, awaits `Dispatcher.acquire` for a `Lease` on an endpoint
(or catches `Rejected`), forwards the request, reports the `Outcome` on the lease and releases it. Queueing
under saturation, hold-at-zero, priority bands, fair shares, token quotas and ejection all live here.
"""
