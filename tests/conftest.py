"""Fixtures shared by every test directory."""
import pytest

from siglip_helpers import train_spiece


@pytest.fixture(scope='session')
def siglip_spiece(tmp_path_factory) -> str:
    """Path of a small ``spiece.model`` with SigLIP's special ids."""
    return train_spiece(str(tmp_path_factory.mktemp('spiece')))
