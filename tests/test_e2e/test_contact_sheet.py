"""demo/contact_sheet.py: the split's first pairs in order, each captioned
with its expression, IoU (or the no-target answer) and presence."""
import cv2
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

from helpers import REPO, load_script

GRES = str(
    sorted((REPO / 'configs' / 'rsrefseg').glob('rsrefseg-tiny-gres_*.py'))[0])


def test_contact_sheet_of_the_first_pairs(tmp_path, capsys):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(GRES).model)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'sheet.png'
    tool = load_script('demo/contact_sheet.py')
    overrides = {
        'test_dataloader.dataset.num_samples': 5,
        'test_dataloader.dataset.no_target_ratio': 0.5
    }
    options = [f'{k}={v}' for k, v in overrides.items()]
    assert tool.main([
        GRES,
        str(ckpt), '--out',
        str(out), '--num', '3', '--columns', '2', '--cfg-options', *options
    ]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pairs = [line for line in lines if line[:3] in ('0: ', '1: ', '2: ')]
    assert [p[0] for p in pairs] == ['0', '1', '2']  # in order
    # the same texts as the split's first pairs
    cfg = Config.fromfile(GRES)
    cfg.merge_from_dict(overrides)
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[]))
    for i, line in enumerate(pairs):
        info = dataset.get_data_info(i)
        assert f'"{info["text"]}"' in line
        assert ('no target' in line) == (info['gt_seg_map'].sum() == 0)
        assert 'presence' in line
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[2] == 3
    # 2 columns of (ground truth | prediction) panels, 2 rows
    assert sheet.shape[1] > 2 * 2 * 128 and sheet.shape[0] > 2 * 128
