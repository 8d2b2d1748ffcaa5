"""``--unsafe-load`` of tools/train.py, tools/test.py and the demos opts in
to full unpickling while they load, and not beyond: no environment
variable is left behind."""
import os

import pytest

from rsrefseg_mm.utils import (UNSAFE_LOAD_ENV, allow_unsafe_load,
                               unsafe_load_enabled)
from rsrefseg_mm.utils.checkpoint import TORCH_NO_WEIGHTS_ONLY_ENV
from helpers import TINY_CONFIG as TINY_CFG
from helpers import load_script


class _Stop(Exception):
    """Raised where a demo would start loading the checkpoint."""


@pytest.fixture(autouse=True)
def _no_opt_in_left(monkeypatch):
    """No opt-in before a test, and none written to the environment by the
    code under test (torch's switch included)."""
    monkeypatch.delenv(UNSAFE_LOAD_ENV, raising=False)
    monkeypatch.delenv(TORCH_NO_WEIGHTS_ONLY_ENV, raising=False)
    yield
    assert TORCH_NO_WEIGHTS_ONLY_ENV not in os.environ


def opt_in_recorder(seen: dict) -> type:
    """A stand-in for the tools' runner that records the opt-in where the
    real one builds the model and loads checkpoints."""

    class Runner:

        @staticmethod
        def from_cfg(cfg):
            seen['from_cfg'] = unsafe_load_enabled()
            return Runner()

        def train(self):
            seen['run'] = unsafe_load_enabled()

        test = train

    return Runner


@pytest.mark.parametrize('flag', [False, True])
@pytest.mark.parametrize('tool,args', [
    ('tools/train.py', [TINY_CFG]),
    ('tools/test.py', [TINY_CFG, 'some.pth']),
])
def test_train_and_test_tools(tool, args, flag, monkeypatch, tmp_path):
    module = load_script(tool)
    seen = {}
    monkeypatch.setattr(module, 'Runner', opt_in_recorder(seen))
    argv = [tool, *args, '--work-dir', str(tmp_path)]
    monkeypatch.setattr('sys.argv', argv + ['--unsafe-load'] * flag)
    module.main()
    assert seen == dict(from_cfg=flag, run=flag)
    assert not unsafe_load_enabled()  # the opt-in ended with main()
    assert UNSAFE_LOAD_ENV not in os.environ


@pytest.mark.parametrize('flag', [False, True])
@pytest.mark.parametrize('demo,args', [
    ('demo/image_demo.py', ['img.png', 'the red circle']),
    ('demo/web_demo.py', []),
])
def test_demos(demo, args, flag, monkeypatch, tmp_path):
    if demo.endswith('web_demo.py'):
        pytest.importorskip('gradio')
    module = load_script(demo)
    seen = {}

    def fake_init(config, checkpoint, device, **kwargs):
        seen['opted_in'] = unsafe_load_enabled()
        raise _Stop

    monkeypatch.setattr(module, 'init_referring_model', fake_init)
    argv = [
        *args, TINY_CFG, 'x.pth',
        '--work-dir' if 'web' in demo else '--out-dir',
        str(tmp_path)
    ] + ['--unsafe-load'] * flag
    with pytest.raises(_Stop):
        module.main(argv)
    assert seen['opted_in'] is flag
    assert not unsafe_load_enabled()
    assert UNSAFE_LOAD_ENV not in os.environ


def test_opt_in_ends_with_its_block():
    with allow_unsafe_load():
        assert unsafe_load_enabled()
        with allow_unsafe_load(False):  # a nested no-op keeps the opt-in
            assert unsafe_load_enabled()
    assert not unsafe_load_enabled()
    with pytest.raises(_Stop):
        with allow_unsafe_load():
            raise _Stop
    assert not unsafe_load_enabled()


def test_environment_variable_opts_in(monkeypatch):
    monkeypatch.setenv(UNSAFE_LOAD_ENV, '1')
    assert unsafe_load_enabled()
    monkeypatch.setenv(UNSAFE_LOAD_ENV, '0')
    assert not unsafe_load_enabled()
