"""The RSRefSeg configs: paper recipe and one change per ablation."""

import pytest
from mmengine.config import Config

from helpers import REPO

CFG_DIR = REPO / 'configs' / 'rsrefseg'
BASE_B = CFG_DIR / (
    'rsrefseg-b_clip-vit-b16-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py')
BASE_L = CFG_DIR / (
    'rsrefseg-l_clip-vit-l14-sam-vit-l_8xb4-lora-200e_rrsisd-1024x1024.py')
ABLATIONS = {
    'rsrefseg-b-no-local-filter': ('neck', 'use_local_filter', False),
    'rsrefseg-b-no-global-filter': ('neck', 'use_global_filter', False),
    'rsrefseg-b-no-dense-prompt': ('neck', 'use_dense_prompt', False),
    'rsrefseg-b-down1': ('neck', 'down_spatial_times', 1),
    'rsrefseg-b-down3': ('neck', 'down_spatial_times', 3),
}


def load(path):
    if not (CFG_DIR.parent / '_base_' / 'datasets' / 'rrsisd.py').exists():
        pytest.fail('configs/_base_/datasets/rrsisd.py is missing')
    return Config.fromfile(str(path))


def flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def test_primitive_b_recipe():
    cfg = load(BASE_B)
    m = cfg.model
    assert m.type == 'RSRefSeg'
    assert m.data_preprocessor.mean is None and m.data_preprocessor.bgr_to_rgb
    assert m.data_preprocessor.size == (1024, 1024)
    assert m.backbone.arch == 'ViT-B/16'
    assert m.backbone.checkpoint == 'checkpoints/ViT-B-16.pt'
    assert m.decode_head.checkpoint == 'checkpoints/sam_vit_b_01ec64.pth'
    for t in (m.backbone.image_tuning, m.backbone.text_tuning,
              m.decode_head.encoder_tuning):
        assert (t.mode, t.rank, t.alpha, t.drop_rate) == ('lora', 16, 16, 0.1)
    assert m.decode_head.encoder_tuning.targets == [
        'qkv', 'proj', 'lin1', 'lin2'
    ]
    assert m.decode_head.loss_decode.loss_weight == 5.0
    assert m.decode_head.loss_decode.use_sigmoid
    assert m.test_cfg.mode == 'whole'
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.find_unused_parameters


def test_primitive_l():
    cfg = load(BASE_L)
    assert cfg.model.backbone.arch == 'ViT-L/14'
    assert cfg.model.backbone.checkpoint == 'checkpoints/ViT-L-14.pt'
    assert cfg.model.neck.in_channels == 768
    assert cfg.model.decode_head.sam_arch == 'vit_l'
    assert cfg.model.decode_head.checkpoint == \
        'checkpoints/sam_vit_l_0b3195.pth'


def _diff(path):
    base = flatten(load(BASE_B).model.to_dict())
    other = flatten(load(path).model.to_dict())
    keys = set(base) | set(other)
    return {k: other.get(k) for k in keys if base.get(k) != other.get(k)}


@pytest.mark.parametrize('prefix', sorted(ABLATIONS))
def test_switch_ablations_change_one_key(prefix):
    path, = CFG_DIR.glob(prefix + '_*.py')
    comp, key, value = ABLATIONS[prefix]
    assert _diff(path) == {f'{comp}.{key}': value}


@pytest.mark.parametrize('rank', [8, 32])
def test_rank_ablations(rank):
    path, = CFG_DIR.glob(f'rsrefseg-b_*lora-r{rank}-*.py')
    diff = _diff(path)
    towers = ('backbone.image_tuning', 'backbone.text_tuning',
              'decode_head.encoder_tuning')
    assert diff == {
        f'{t}.{k}': rank
        for t in towers for k in ('rank', 'alpha')
    }


def test_frozen_text_ablation():
    path, = CFG_DIR.glob('rsrefseg-b-frozen-text_*.py')
    cfg = load(path)
    assert cfg.model.backbone.text_tuning == dict(mode='frozen')
    assert set(_diff(path)) == {
        'backbone.text_tuning.' + k
        for k in ('mode', 'rank', 'alpha', 'drop_rate', 'targets')
    }


def test_readme_lists_every_config():
    readme = (CFG_DIR / 'README.md').read_text()
    for p in CFG_DIR.glob('*.py'):
        if '_8xb4-' in p.name:
            assert p.name in readme, p.name


PAPER_B = CFG_DIR / ('rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-'
                     '200e_rrsisd-1024x1024.py')
PAPER_L = CFG_DIR / ('rsrefseg-l_siglip-so400m-p14-384-sam-vit-l_8xb4-lora-'
                     '200e_rrsisd-1024x1024.py')


def test_paper_b_is_the_authors_model_and_recipe():
    cfg = load(PAPER_B)
    m = cfg.model
    assert m.backbone.type == 'SigLIPBackbone'
    assert m.backbone.arch == 'so400m-patch14-384'
    assert m.backbone.checkpoint == 'checkpoints/siglip-so400m-patch14-384'
    assert not m.backbone.logit_trainable
    qkvo = [
        'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
        'self_attn.out_proj'
    ]
    assert m.backbone.image_tuning.targets == qkvo
    assert m.backbone.text_tuning.targets == qkvo + ['head']
    assert m.decode_head.encoder_tuning.targets == [
        'attn.qkv', 'attn.proj', 'mlp.lin1', 'mlp.lin2', 'neck.0', 'neck.2'
    ]
    for t in (m.backbone.image_tuning, m.backbone.text_tuning,
              m.decode_head.encoder_tuning):
        assert (t.mode, t.rank, t.alpha, t.drop_rate) == ('lora', 16, 16, 0.1)
    # the authors' prompter is TextFilterNeck's default: the config sets
    # only the width of SigLIP so400m and the norm
    assert set(m.neck) == {'type', 'in_channels', 'norm_cfg'}
    assert m.neck.in_channels == 1152
    loss = m.decode_head.loss_decode
    assert isinstance(loss, dict) and loss.type == 'CrossEntropyLoss'
    assert loss.use_sigmoid and loss.loss_weight == 5.0
    assert m.data_preprocessor.size == (1024, 1024)
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=1e-4, weight_decay=0.05)
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end) == ('LinearLR', 0.01, 5)
    assert (cos.type, cos.eta_min_ratio, cos.end) == ('CosineAnnealingLR',
                                                      0.001, 200)
    assert cfg.train_cfg.max_epochs == 200 and cfg.train_cfg.val_interval == 5
    assert cfg.train_dataloader.batch_size * 8 == 32
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline] == [
        'LoadReferringImageFromFile', 'LoadReferringAnnotations', 'Resize',
        'PackReferringInputs'
    ]  # no augmentation
    assert cfg.default_hooks.checkpoint.save_best == 'refer/mIoU'


def test_paper_l_changes_only_sam():
    b = flatten(load(PAPER_B).model.to_dict())
    ll = flatten(load(PAPER_L).model.to_dict())
    diff = {k: ll.get(k) for k in set(b) | set(ll) if b.get(k) != ll.get(k)}
    assert diff == {
        'decode_head.sam_arch': 'vit_l',
        'decode_head.checkpoint': 'checkpoints/sam_vit_l_0b3195.pth'
    }


@pytest.mark.parametrize('path', [BASE_B, BASE_L])
def test_clip_variants_calibrate_their_filters(path):
    neck = load(path).model.neck
    assert neck.filter_cfg == dict(type='calibrated', std=2.0)
    assert neck.pos_embed == 'random' and neck.exclude_sot
