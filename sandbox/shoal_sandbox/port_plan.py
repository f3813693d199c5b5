"""Which of a sandbox's stored control-plane ports to choose anew at `up` (a pure decision).

A port stays its component's for the sandbox's life: kubeconfigs, etcd's peer URL and the real node's
kubelet and kube-proxy were all started with it. So while any component runs (a restart of one of them, as
the chaos tests do), no stored port moves: `up` waits for a busy port (a SIGKILLed process holds its
ports for a moment after it counts as dead) and says so when it stays busy, where a moved port would
leave a cluster whose parts talk past each other.
Only a cold start (nothing running) re-picks a port that is busy, or one an older sandbox took from the
kernel's ephemeral range, where an outgoing connection can take it while its server is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


def ports_to_choose(
    stored: Mapping[str, int],
    names: Iterable[str],
    cold: bool,
    busy: Callable[[str, int], bool],
    server_port: Callable[[int], bool],
) -> list[str]:
    """The port names that need a new port: missing ones always; on a cold start also the busy ones and
    those outside the server ranges. `busy(name, port)` is asked only on a cold start."""
    chosen = []
    for name in names:
        port = stored.get(name)
        if port is None or (cold and (not server_port(port) or busy(name, port))):
            chosen.append(name)
    return chosen
