"""``test_cfg.group_by_image``: each distinct image is encoded once on a
dataset with three expressions per image, and the metrics equal the plain
run exactly."""
import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import TINY_CONFIG

PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]
TEXTS = ['the red circle', 'a blue square', 'the object at the top']


def write_refsegrs(root, num_images=4):
    """RefSegRS layout: images/<id>.tif, masks/<id>.tif and
    output_phrase_test.txt with three lines (expressions) per image."""
    (root / 'images').mkdir(parents=True)
    (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for k in range(num_images):
        name = str(100 + k)
        img = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        mask = np.zeros((64, 80), np.uint8)
        mask[8 + 4 * k:40, 10:50 - 5 * k] = 255
        cv2.imwrite(str(root / 'images' / f'{name}.tif'), img)
        cv2.imwrite(str(root / 'masks' / f'{name}.tif'), mask)
        lines += [f'{name} {text}' for text in TEXTS]
    (root / 'output_phrase_test.txt').write_text('\n'.join(lines) + '\n')
    return len(lines)


def run_test(tmp_path, data_root, group_by_image):
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(
        dict(
            work_dir=str(tmp_path / f'work_{group_by_image}'),
            test_dataloader=dict(
                dataset=dict(
                    _delete_=True,
                    type='RefSegRSDataset',
                    data_root=str(data_root),
                    split='test',
                    test_mode=True,
                    pipeline=PIPELINE)),
            default_hooks=dict(visualization=dict(draw=False))))
    cfg.model.test_cfg = dict(mode='whole', group_by_image=group_by_image)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    torch.manual_seed(0)
    with torch.no_grad():  # random weights with non-trivial masks
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + p)
    sam_encodings = []
    encode = model.decode_head.encode_image

    def counting(images):
        sam_encodings.append(images.shape[0])
        return encode(images)

    model.decode_head.encode_image = counting
    state = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = runner.test()
    return metrics, sum(sam_encodings), state


def test_group_by_image_encodes_once_and_scores_the_same(tmp_path):
    data_root = tmp_path / 'refsegrs'
    num_samples = write_refsegrs(data_root)
    plain, plain_enc, plain_state = run_test(tmp_path, data_root, False)
    grouped, grouped_enc, grouped_state = run_test(tmp_path, data_root, True)
    for k, v in plain_state.items():  # the same weights in both runs
        assert torch.equal(v, grouped_state[k]), k
    assert plain_enc == num_samples == 12
    assert grouped_enc == num_samples // len(TEXTS) == 4
    assert plain == grouped
    assert 0 < plain['refer/mIoU'] < 100
