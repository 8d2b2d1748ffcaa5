import os
import sys

import pytest

from helpers import REPO, TINY_CONFIG


@pytest.fixture(scope='session')
def tiny_config():
    return TINY_CONFIG


@pytest.fixture(scope='session')
def env():
    e = dict(os.environ)
    e['PYTHONPATH'] = str(REPO)
    e['OMP_NUM_THREADS'] = '1'
    e['PYTHON'] = sys.executable
    return e
