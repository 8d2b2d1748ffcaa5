"""Every config under configs/ parses and builds its model with random
weights (RSRefSeg 2's full-size model on the meta device, once: its other
configs share it), and the paper's configs build the authors' model.

Checkpoint paths are cleared (``checkpoint=None``) so nothing is read from
``checkpoints/``; SigLIP configs get the SentencePiece model trained by the
``siglip_spiece`` fixture (the real ``spiece.model`` is a user file);
datasets are built where they need no files. Which key each ablation
changes is checked in
``tests/test_models/test_segmentors/test_rsrefseg_configs.py``.
"""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models import (CascadedPrompter, SAM2PromptHead,
                                SAMPromptHead, SigLIPBackbone, TextFilterNeck)
from helpers import REPO, load_script

CONFIG_DIR = REPO / 'configs'
ALL_CONFIGS = sorted(
    p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
#: RSRefSeg 2's RRSIS-D model (SigLIP 2 so400m + SAM 2.1 Hiera-L, 1.45 B
#: parameters): built on the meta device.
RSREFSEG2_L = CONFIG_DIR / 'rsrefseg2' / (
    'rsrefseg2-l_siglip2-so400m-p16-512-sam2.1-hiera-l_8xb8-lora-300e_'
    'rrsisd-1024x1024.py')
#: Configs with the model of another one (RSRefSeg 2's other datasets and
#: its FlexibleRunner variants): not built again;
#: test_rsrefseg2_configs.py checks that their model is that config's.
SAME_MODEL = {
    p: RSREFSEG2_L
    for p in CONFIG_DIR.glob('rsrefseg2/rsrefseg2-l_*.py') if p != RSREFSEG2_L
}
CONFIGS = [p for p in ALL_CONFIGS if p not in SAME_MODEL]
#: The paper's RSRefSeg-b and RSRefSeg-l.
PAPER_CONFIGS = sorted(
    CONFIG_DIR.glob('rsrefseg/rsrefseg-[bl]_siglip-so400m-p14-384-*.py'))


def clear_checkpoints(cfg):
    """Recursively set every ``checkpoint`` key of a model cfg to None."""
    if isinstance(cfg, dict):
        for k in list(cfg.keys()):
            if k == 'checkpoint':
                cfg[k] = None
            else:
                clear_checkpoints(cfg[k])
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            clear_checkpoints(v)


def build_model(path, spiece, gemma=None, device=None):
    cfg = Config.fromfile(str(path))
    init_default_scope('mmseg')
    clear_checkpoints(cfg.model)
    if cfg.model.backbone.type == 'SigLIPBackbone':
        siglip2 = str(cfg.model.backbone.arch).startswith('siglip2')
        cfg.model.backbone.tokenizer = gemma if siglip2 else spiece
    if device == 'meta':
        count_params = load_script('tools/analysis_tools/count_params.py')
        with torch.device('meta'), count_params._linspace_on_cpu():
            return cfg, MODELS.build(cfg.model)
    return cfg, MODELS.build(cfg.model)


def test_configs_exist():
    assert len(CONFIGS) >= 1
    assert [p.name[:10] for p in PAPER_CONFIGS] == ['rsrefseg-b', 'rsrefseg-l']


#: Datasets generated in memory (no image files).
SYNTHETIC = ('SyntheticReferringDataset', 'SyntheticSceneWindowDataset')


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_builds(path, siglip_spiece, gemma_spiece):
    device = 'meta' if path == RSREFSEG2_L else None
    cfg, model = build_model(path, siglip_spiece, gemma_spiece, device)
    assert cfg.default_scope == 'mmseg'
    assert 'rsrefseg_mm' in cfg.custom_imports['imports']
    assert sum(p.numel() for p in model.parameters()) > 0
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        assert loader is not None, f'{path.name}: no {split}_dataloader'
        parts = loader.dataset.datasets \
            if loader.dataset.type == 'ConcatDataset' else [loader.dataset]
        for part in parts:
            assert DATASETS.get(part.type) is not None, part.type
            if part.type not in SYNTHETIC:  # reads image files
                # the loader whose errors name the sample, not mmcv's own
                assert part.pipeline[0].type == 'LoadReferringImageFromFile'
            assert all(t.type != 'LoadImageFromFile' for t in part.pipeline)
        if all(part.type in SYNTHETIC for part in parts):
            for part in parts:  # samples are built eagerly: a few suffice
                part.num_samples = min(part.num_samples, 4)
            ds = DATASETS.build(loader.dataset)
            for index in {0, len(ds) - 1}:  # each part of a concatenation
                sample = ds[index]
                assert 'text' in sample['data_samples'].metainfo
    if path in PAPER_CONFIGS:
        check_authors_model(model)
    if path == RSREFSEG2_L:
        check_rsrefseg2_model(model)


def check_authors_model(model):
    """SigLIP so400m-p14-384 with its own frozen logit scale and bias,
    ``TextFilterNeck()`` (the authors' prompter) on SAM's pretrained
    positional encoding, and SAM."""
    backbone, neck, head = model.backbone, model.neck, model.decode_head
    assert isinstance(backbone, SigLIPBackbone)
    assert backbone.arch_name == 'so400m-patch14-384'
    assert not backbone.logit_scale.requires_grad
    assert not backbone.logit_bias.requires_grad
    assert isinstance(head, SAMPromptHead)
    assert head.sam_arch in ('vit_b', 'vit_l')
    assert isinstance(neck, TextFilterNeck)
    torch.manual_seed(0)
    authors = TextFilterNeck()
    assert {k: v.shape for k, v in neck.state_dict().items()} == \
        {k: v.shape for k, v in authors.state_dict().items()}
    for attr in ('filter_cfg', 'pos_embed', 'exclude_sot', 'dense_prompt_size',
                 'down_spatial_times', 'use_local_filter', 'use_global_filter',
                 'use_dense_prompt'):
        assert getattr(neck, attr) == getattr(authors, attr), attr
    # the encoding of the 27x27 grid is SAM's (the head's, pretrained)
    assert torch.equal(
        neck.positional_encoding(27, 27), head.prompt_encoder.pe_layer(
            (27, 27)))


def check_rsrefseg2_model(model):
    """SigLIP 2 so400m-patch16-512 with its own frozen logit scale and bias,
    ``CascadedPrompter()`` (the authors' prompter) and SAM 2.1 Hiera-L."""
    backbone, neck, head = model.backbone, model.neck, model.decode_head
    assert isinstance(backbone, SigLIPBackbone)
    assert backbone.arch_name == 'siglip2-so400m-patch16-512'
    assert not backbone.logit_scale.requires_grad
    assert isinstance(neck, CascadedPrompter)
    assert isinstance(head, SAM2PromptHead) and head.sam2_arch == 'large'
    with torch.device('meta'):
        authors = CascadedPrompter()
    assert {k: v.shape for k, v in neck.state_dict().items()} == \
        {k: v.shape for k, v in authors.state_dict().items()}
    # the prompter's 32x32 image positional embedding is SigLIP 2's grid
    assert neck.img_pos_embed.shape[-2:] == (32, 32)


def test_filter_grounding_loss_only_in_the_demo_recipe():
    """The tiny demo trains its from-scratch towers with the global-filter
    grounding loss and a cosine decay that ends with the run; the RRSIS-D
    configs (pretrained towers, the paper's recipe) do not use the loss."""
    for path in ALL_CONFIGS:
        cfg = Config.fromfile(str(path))
        weight = cfg.model.get('filter_loss_weight', 0.0)
        if 'synthetic' in path.name:
            assert weight > 0, path.name
            cosine = [
                s for s in cfg.param_scheduler if s.type == 'CosineAnnealingLR'
            ]
            assert len(cosine) == 1
            assert cosine[0].end == cfg.train_cfg.max_iters
        else:
            assert weight == 0.0, path.name
