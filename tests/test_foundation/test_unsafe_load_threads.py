"""The unsafe opt-in belongs to the thread that asked for it: while one
thread loads a trusted file inside ``allow_unsafe_load()``, a crafted file
loaded by another thread is refused and its command does not run."""
import pickle
import threading

import pytest
import torch

from rsrefseg_mm.apis import init_referring_model
from rsrefseg_mm.utils import (UnsafeCheckpointError, allow_unsafe_load,
                               safe_torch_load)
from helpers import TINY_CONFIG, crafted_checkpoint

#: Set by the trusted file's payload once thread A is inside its load.
A_INSIDE = threading.Event()
#: Set by the test when thread B is done; A's load returns after it.
B_DONE = threading.Event()
#: Longest wait for the other thread (a hung test fails instead).
WAIT_S = 120


def hold_trusted_load() -> str:
    """The trusted file's payload (a full unpickle calls it): thread A
    stays inside its load until thread B has finished."""
    A_INSIDE.set()
    assert B_DONE.wait(WAIT_S), 'thread B did not finish'
    return 'held'


class _HoldsTheLoad:

    def __reduce__(self):
        return (hold_trusted_load, ())


def _load_in_thread(target, results: dict, name: str) -> threading.Thread:

    def run():
        try:
            results[name] = target()
        except BaseException as e:  # asserted on by the test
            results[name] = e

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize('b_loader', ['init_referring_model', 'torch.load'])
def test_opt_in_of_one_thread_does_not_reach_another(b_loader, tmp_path):
    A_INSIDE.clear()
    B_DONE.clear()
    trusted = tmp_path / 'trusted.pth'
    torch.save(dict(state_dict={}, meta=dict(gate=_HoldsTheLoad())), trusted)
    crafted, marker = crafted_checkpoint(tmp_path)

    def a_loads_trusted():
        with allow_unsafe_load():
            return safe_torch_load(str(trusted))

    def b_loads_crafted():
        if b_loader == 'torch.load':  # other code: torch's default
            return torch.load(crafted)
        return init_referring_model(TINY_CONFIG, crafted)

    results = {}
    thread_a = _load_in_thread(a_loads_trusted, results, 'A')
    try:
        assert A_INSIDE.wait(WAIT_S), results.get('A')
        # A is inside its opted-in load now: B loads the crafted file
        thread_b = _load_in_thread(b_loads_crafted, results, 'B')
        thread_b.join(WAIT_S)
        assert not thread_b.is_alive()
    finally:
        B_DONE.set()
        thread_a.join(WAIT_S)
    assert not marker.exists(), 'the crafted payload ran in thread B'
    expected = pickle.UnpicklingError if b_loader == 'torch.load' else \
        UnsafeCheckpointError
    assert isinstance(results['B'], expected), results['B']
    if expected is UnsafeCheckpointError:
        assert crafted in str(results['B'])
        assert 'posix.system' in str(results['B'])
    # A's load was fully unpickled (its payload returned), as opted in
    assert results['A']['meta']['gate'] == 'held', results['A']
