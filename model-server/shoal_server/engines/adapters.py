"""LoRA adapters of one replica: which are registered (served, listed in /v1/models) and, for the
simulated engine, which sit in one of the `max_loras` slots of a batch.

vLLM's model: `add_lora` registers an adapter (its weights go to a CPU cache); a running batch can use
at most `max_loras` different adapters, each in a GPU slot; bringing an adapter into a slot costs a
load, and when every slot is taken the least recently used one that no running sequence needs is
evicted. `SlotCache` is that decision, pure and clock-free; the sim engine charges its cost to the
step in which the sequence joins.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

# What a served model name may look like (the same rule for adapters): no spaces, no slashes at the
# ends, at most 128 characters, so it is safe in a URL path, a metric label and a Kubernetes annotation.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,126}[A-Za-z0-9]$|^[A-Za-z0-9]$")


class AdapterError(ValueError):
    """An adapter cannot be added or removed (bad name, unknown, full); maps to an HTTP 4xx."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_adapter") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class LoraSettings:
    max_loras: int = 4  # adapters in one batch (GPU slots)
    max_lora_rank: int = 16
    max_adapters: int = 256  # registered at once (vLLM: max_cpu_loras)
    load_s: float = 0.05  # sim: bringing an adapter into a slot
    evict_s: float = 0.01  # sim: extra cost when that needs an eviction first

    def __post_init__(self) -> None:
        if self.max_loras < 1 or self.max_lora_rank < 1 or self.max_adapters < 1:
            raise ValueError("max_loras, max_lora_rank and max_adapters must be >= 1")
        if self.load_s < 0 or self.evict_s < 0:
            raise ValueError("adapter load and eviction times must be >= 0")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AdapterError(f"invalid adapter name {name!r}: 1-128 of [A-Za-z0-9._:/-]", code="invalid_name")
    return name


class AdapterRegistry:
    """Registered adapters, name -> path (or URI), in the order they were added."""

    def __init__(self, base_model: str, max_adapters: int) -> None:
        self.base_model = base_model
        self.max_adapters = max_adapters
        self._paths: dict[str, str] = {}
        self._ids: dict[str, int] = {}
        self._next_id = 1

    def add(self, name: str, path: str) -> bool:
        """Register; True if new, False if already there with the same path."""
        check_name(name)
        if name == self.base_model:
            raise AdapterError(f"adapter name {name!r} is the base model's name", code="invalid_name")
        if not path:
            raise AdapterError("an adapter needs a path", code="invalid_path")
        if name in self._paths:
            if self._paths[name] == path:
                return False
            raise AdapterError(
                f"adapter {name!r} is already loaded from another path; unload it first", 409, "conflict"
            )
        if len(self._paths) >= self.max_adapters:
            raise AdapterError(
                f"at most {self.max_adapters} adapters can be loaded", 409, "too_many_adapters"
            )
        self._paths[name] = path
        self._ids[name] = self._next_id
        self._next_id += 1
        return True

    def remove(self, name: str) -> None:
        if name not in self._paths:
            raise AdapterError(f"adapter {name!r} is not loaded", 404, "adapter_not_found")
        del self._paths[name]
        del self._ids[name]

    def names(self) -> list[str]:
        return list(self._paths)

    def path(self, name: str) -> str:
        return self._paths[name]

    def int_id(self, name: str) -> int:
        """A stable positive id per registration (vLLM's `lora_int_id`)."""
        return self._ids[name]

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __len__(self) -> int:
        return len(self._paths)


@dataclass(frozen=True)
class SlotGrant:
    loaded: bool  # the adapter was not resident: a load was needed
    evicted: str | None = None  # the adapter that gave up its slot


class SlotCache:
    """`slots` adapter slots, LRU; a slot is pinned while a running sequence uses its adapter."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._pins: collections.OrderedDict[str, int] = collections.OrderedDict()  # LRU first

    def resident(self) -> list[str]:
        return list(self._pins)

    def acquire(self, name: str) -> SlotGrant | None:
        """A slot for `name` (pinned), or None when every slot is pinned by other adapters."""
        if name in self._pins:
            self._pins[name] += 1
            self._pins.move_to_end(name)
            return SlotGrant(loaded=False)
        evicted: str | None = None
        if len(self._pins) >= self.slots:
            evicted = next((n for n, pins in self._pins.items() if pins == 0), None)
            if evicted is None:
                return None
            del self._pins[evicted]
        self._pins[name] = 1
        return SlotGrant(loaded=True, evicted=evicted)

    def release(self, name: str) -> None:
        if self._pins.get(name, 0) > 0:
            self._pins[name] -= 1

    def drop(self, name: str) -> None:
        """Forget an unregistered adapter's slot once nothing runs on it."""
        if self._pins.get(name) == 0:
            del self._pins[name]
