"""Fixtures shared by every test directory."""
import pytest

from siglip_helpers import train_gemma_spiece, train_spiece


@pytest.fixture(scope='session')
def siglip_spiece(tmp_path_factory) -> str:
    """Path of a small ``spiece.model`` with SigLIP's special ids."""
    return train_spiece(str(tmp_path_factory.mktemp('spiece')))


@pytest.fixture(scope='session')
def gemma_spiece(tmp_path_factory) -> str:
    """Path of a small ``tokenizer.model`` in the layout of SigLIP 2's
    Gemma tokenizer."""
    return train_gemma_spiece(str(tmp_path_factory.mktemp('gemma')))
