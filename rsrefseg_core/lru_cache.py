"""A bounded least-recently-used mapping: the encoded images of both
predictors (PyTorch and ONNX Runtime) and of ``RSRefSeg``'s
``test_cfg.group_by_image`` test path."""
import operator
from collections import OrderedDict
from typing import Any, Hashable, Optional


def check_cache_size(size, what: str = 'cache_size') -> int:
    """``size`` as an int >= 0.

    Raises:
        ValueError: For a negative number, a bool or a non-integer.
    """
    if isinstance(size, bool):
        raise ValueError(f'{what} must be an integer >= 0, got {size!r}')
    try:
        value = operator.index(size)
    except TypeError:
        raise ValueError(
            f'{what} must be an integer >= 0, got {size!r}') from None
    if value < 0:
        raise ValueError(f'{what} must be >= 0, got {size}')
    return value


class LRUCache(OrderedDict):
    """At most ``size`` entries; reading or writing one makes it the most
    recent, and the least recent is dropped when full.

    Keys are hashable content keys (e.g. a sha256 digest plus the reading
    arguments); the cache never holds the inputs themselves.

    Args:
        size (int): Entries kept (0, the default, keeps none).
    """

    def __init__(self, size: int = 0) -> None:
        super().__init__()
        self.size = check_cache_size(size)

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
