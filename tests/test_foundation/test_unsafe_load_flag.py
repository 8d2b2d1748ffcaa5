"""``--unsafe-load`` of tools/train.py, tools/test.py and the demos opts in
to full unpickling while they load, and not beyond: torch's process-wide
switch is never set, and no environment variable opts in."""
import os

import pytest

from rsrefseg_mm.utils import allow_unsafe_load, unsafe_load_enabled
from helpers import TINY_CONFIG as TINY_CFG
from helpers import load_script

#: torch's process-wide switch for torch.load calls without weights_only.
TORCH_SWITCH = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


class _Stop(Exception):
    """Raised where a demo would start loading the checkpoint."""


@pytest.fixture(autouse=True)
def _torch_switch_never_set(monkeypatch):
    """The code under test never sets torch's process-wide switch."""
    monkeypatch.delenv(TORCH_SWITCH, raising=False)
    yield
    assert TORCH_SWITCH not in os.environ


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


def test_environment_variable_does_not_opt_in(monkeypatch):
    """Trust is given per call (--unsafe-load, allow_unsafe_load()), not by
    a process-wide switch."""
    monkeypatch.setenv('RSREFSEG_UNSAFE_LOAD', '1')
    assert not unsafe_load_enabled()
