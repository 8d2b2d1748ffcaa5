"""A bounded least-recently-used mapping (encoded images of the
predictors)."""
from collections import OrderedDict
from typing import Any, Hashable, Optional


class LRUCache(OrderedDict):
    """At most ``size`` entries; reading or writing one makes it the most
    recent, and the least recent is dropped when full.

    Args:
        size (int): Entries kept (0 keeps none).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f'cache_size must be >= 0, got {size}')
        self.size = int(size)

    def lookup(self, key: Optional[Hashable]) -> Any:
        """The value of ``key`` (now the most recent), or None."""
        if key is None or key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def store(self, key: Optional[Hashable], value: Any) -> None:
        """Keep ``value`` under ``key`` (None: not kept)."""
        if key is None or not self.size:
            return
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
