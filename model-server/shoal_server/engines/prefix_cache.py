"""A model of vLLM's automatic prefix cache for the simulated engine (pure data structure, no clock).

KV blocks of `block_tokens` tokens are keyed by a chained hash (block i's key covers tokens 0..i), so a
prompt hits the cache for as many leading full blocks as are held. Capacity is bounded in blocks; the
least recently used blocks are evicted first, as vLLM frees cached blocks.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    def __init__(self, capacity_tokens: int, block_tokens: int = 16) -> None:
        if capacity_tokens < 0 or block_tokens < 1:
            raise ValueError("capacity_tokens must be >= 0 and block_tokens >= 1")
        self.block_tokens = block_tokens
        self.capacity_blocks = capacity_tokens // block_tokens
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def _keys(self, tokens: Sequence[int]) -> list[int]:
        keys: list[int] = []
        prev = 0
        n = len(tokens) - len(tokens) % self.block_tokens
        for i in range(0, n, self.block_tokens):
            prev = zlib.crc32(repr(tokens[i : i + self.block_tokens]).encode(), prev) ^ (i + 1)
            keys.append(prev)
        return keys

    def lookup(self, tokens: Sequence[int]) -> int:
        """Tokens of `tokens` already cached (leading full blocks); touches what it hits."""
        hit = 0
        for key in self._keys(tokens):
            if key not in self._blocks:
                break
            self._blocks.move_to_end(key)
            hit += self.block_tokens
        return hit

    def insert(self, tokens: Sequence[int]) -> None:
        """Cache the prompt's full blocks, evicting the least recently used beyond capacity."""
        if self.capacity_blocks == 0:
            return
        for key in self._keys(tokens):
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
