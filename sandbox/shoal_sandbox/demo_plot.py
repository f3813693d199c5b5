"""The demo's samples over time and their plot (offered load, queue depth, desired and ready replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    t: float
    offered_rps: float
    queue: float
    desired: int
    ready: int
    completed: int
    failed: int


def plot(samples: list[Sample], path: Path, title: str = "") -> Path:
    """Offered load, queue depth and desired/ready replicas over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[1.1, 1])
    ax1.plot(t, [s.offered_rps for s in samples], color="tab:blue", label="offered load (req/s)")
    ax1.set_ylabel("req/s", color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax1b = ax1.twinx()
    ax1b.plot(
        t, [s.queue for s in samples], color="tab:red", alpha=0.8, label="queue depth (server + router)"
    )
    ax1b.set_ylabel("queued requests", color="tab:red")
    ax1b.set_ylim(bottom=0)
    lines = ax1.get_lines() + ax1b.get_lines()
    ax1.legend(lines, [str(ln.get_label()) for ln in lines], loc="upper left")
    ax2.step(t, [s.desired for s in samples], where="post", color="tab:purple", label="desired replicas")
    ax2.step(t, [s.ready for s in samples], where="post", color="tab:green", label="ready replicas")
    ax2.set_ylabel("replicas")
    ax2.set_xlabel("seconds since the load started")
    ax2.set_ylim(bottom=0)
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax2.legend(loc="upper left")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
