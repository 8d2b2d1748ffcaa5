"""``--unsafe-load`` on tools/train.py, tools/test.py and demo/image_demo.py
opts in to full unpickling (the env variable) before anything is loaded."""
import os

import pytest

from rsrefseg_mm.utils import UNSAFE_LOAD_ENV, unsafe_load_enabled

from helpers import TINY_CONFIG as TINY_CFG
from helpers import fake_runner, load_script


class _Stop(Exception):
    """Raised where the demo would start loading the checkpoint."""


@pytest.mark.parametrize('flag', [False, True])
@pytest.mark.parametrize('tool,args', [
    ('tools/train.py', [TINY_CFG]),
    ('tools/test.py', [TINY_CFG, 'some.pth']),
])
def test_train_and_test_tools(tool, args, flag, monkeypatch, tmp_path):
    monkeypatch.delenv(UNSAFE_LOAD_ENV, raising=False)
    module = load_script(tool)
    seen = {}
    monkeypatch.setattr(module, 'Runner', fake_runner(seen))
    argv = [tool, *args, '--work-dir', str(tmp_path)]
    monkeypatch.setattr('sys.argv', argv + ['--unsafe-load'] * flag)
    module.main()  # the runner, where checkpoints load, is a stand-in
    assert seen['ran'] in ('train', 'test')
    assert unsafe_load_enabled() is flag
    assert (os.environ.get(UNSAFE_LOAD_ENV) == '1') is flag


@pytest.mark.parametrize('flag', [False, True])
def test_image_demo(flag, monkeypatch, tmp_path):
    monkeypatch.delenv(UNSAFE_LOAD_ENV, raising=False)
    module = load_script('demo/image_demo.py')
    seen = {}

    def fake_init(config, checkpoint, device, **kwargs):
        seen['opted_in'] = unsafe_load_enabled()
        raise _Stop

    monkeypatch.setattr(module, 'init_referring_model', fake_init)
    argv = ['image_demo.py', 'img.png', 'the red circle', TINY_CFG, 'x.pth',
            '--out-dir', str(tmp_path)]
    monkeypatch.setattr('sys.argv', argv + ['--unsafe-load'] * flag)
    with pytest.raises(_Stop):
        module.main()
    assert seen['opted_in'] is flag
