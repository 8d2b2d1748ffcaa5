"""The RSRefSeg 2 configs: the authors' model and recipe per dataset, their
FlexibleRunner variants (DeepSpeed ZeRO-2 bf16, FSDP) and the strategy
objects they build, tools/train.py's choice of runner."""
import importlib.util
import math

import pytest
from mmengine.config import Config
from mmengine.registry import STRATEGIES
from mmengine.runner import FlexibleRunner

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.engine import RSRefSegRunner
from rsrefseg_mm.utils.dist import _fsdp_on_cpu
from helpers import REPO, load_script

CFG_DIR = REPO / 'configs' / 'rsrefseg2'
NAME = 'rsrefseg2-l_siglip2-so400m-p16-512-sam2.1-hiera-l_8xb8-lora-'
RRSISD = CFG_DIR / f'{NAME}300e_rrsisd-1024x1024.py'
RISBENCH = CFG_DIR / f'{NAME}300e_risbench-1024x1024.py'
REFSEGRS = CFG_DIR / f'{NAME}600e_refsegrs-1024x1024.py'
MAIN = (RRSISD, RISBENCH, REFSEGRS)
DEEPSPEED = sorted(CFG_DIR.glob('*_deepspeed-zero2-bf16.py'))
FSDP = sorted(CFG_DIR.glob('*_fsdp.py'))
HAS_DEEPSPEED = importlib.util.find_spec('deepspeed') is not None


def load(path):
    return Config.fromfile(str(path))


def base_of(path):
    """The config a FlexibleRunner variant inherits."""
    return path.with_name(
        path.name.replace('_deepspeed-zero2-bf16', '').replace('_fsdp', ''))


def test_the_configs_exist():
    assert all(p.is_file() for p in MAIN)
    assert len(DEEPSPEED) == 4 and len(FSDP) == 2  # 3 datasets + tiny
    assert all(base_of(p).is_file() for p in DEEPSPEED + FSDP)


def test_rrsisd_is_the_authors_model():
    m = load(RRSISD).model
    assert m.type == 'RSRefSeg'
    b = m.backbone
    assert (b.type, b.arch) == ('SigLIPBackbone', 'siglip2-so400m-patch16-512')
    assert b.checkpoint == 'checkpoints/siglip2-so400m-patch16-512'
    assert b.tokenizer_cfg == dict(lowercase=False)  # as the authors feed it
    assert not b.logit_trainable
    qkvo = [f'self_attn.{x}_proj' for x in ('q', 'k', 'v', 'out')]
    assert b.image_tuning.targets == qkvo
    assert b.text_tuning.targets == qkvo + ['head']
    h = m.decode_head
    assert (h.type, h.sam2_arch) == ('SAM2PromptHead', 'large')
    assert h.checkpoint == 'checkpoints/sam2.1_hiera_large.pt'
    assert h.encoder_tuning.targets == [
        r'trunk\.blocks\.\d+\.attn\.(qkv|proj)', r'neck\.convs\.\d+\.conv'
    ]
    # LoRA r16, alpha 16, no dropout on every tower
    for t in (b.image_tuning, b.text_tuning, h.encoder_tuning):
        assert (t.mode, t.rank, t.alpha, t.drop_rate) == ('lora', 16, 16, 0.)
    # the prompter is CascadedPrompter's defaults (their RRSIS-D config)
    assert dict(m.neck) == dict(type='CascadedPrompter')
    assert [(x.type, x.loss_weight)
            for x in h.loss_decode] == [('CrossEntropyLoss', 5.0),
                                        ('DiceLoss', 5.0)]
    assert all(x.use_sigmoid for x in h.loss_decode)
    assert m.data_preprocessor.size == (1024, 1024)


def scheduler(cfg):
    warm, cos = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.begin, warm.end) == \
        ('LinearLR', 0.01, 0, 5)
    assert warm.convert_to_iter_based
    assert cos.type == 'CosineAnnealingLR' and cos.eta_min_ratio == 0.01
    assert not cos.get('convert_to_iter_based', False)  # stepped per epoch
    return cos


@pytest.mark.parametrize('path', [RRSISD, RISBENCH])
def test_300_epoch_recipe(path):
    cfg = load(path)
    ow = cfg.optim_wrapper
    assert ow.type == 'SkipNonFiniteAmpOptimWrapper'
    assert ow.dtype == 'bfloat16' and ow.clip_grad == dict(max_norm=3.0)
    assert ow.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.05)
    cos = scheduler(cfg)
    assert (cos.begin, cos.end, cos.T_max) == (30, 300, 390)
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.train_cfg.val_interval == 10
    assert cfg.train_dataloader.batch_size == 8
    ckpt = cfg.default_hooks.checkpoint
    assert (ckpt.save_best, ckpt.rule, ckpt.interval) == ('refer/gIoU',
                                                          'greater', 10)
    # gIoU is only reported by the generalized metric
    assert cfg.val_evaluator == dict(
        type='ReferringIoUMetric', generalized=True)
    assert cfg.runner_type == 'RSRefSegRunner'
    # 0.22x of the lr at the end: the cosine's period is 1.3 x the run
    end = 0.01 + 0.99 * (1 + math.cos(math.pi * (300 - 30) / 390)) / 2
    assert end == pytest.approx(0.2238, abs=1e-4)


def test_refsegrs_recipe():
    cfg = load(REFSEGRS)
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    cos = scheduler(cfg)
    assert (cos.begin, cos.end, cos.T_max) == (60, 600, 1080)
    assert cfg.train_cfg.max_epochs == 600
    assert cfg.default_hooks.checkpoint.save_best == 'refer/gIoU'


@pytest.mark.parametrize('path', [RISBENCH, REFSEGRS])
def test_the_datasets_share_the_model(path):
    assert load(path).model == load(RRSISD).model
    assert load(path).train_dataloader.dataset.type in ('RISBenchDataset',
                                                        'RefSegRSDataset')


@pytest.mark.parametrize('path', DEEPSPEED, ids=lambda p: p.name[:40])
def test_deepspeed_variants(path):
    cfg, base = load(path), load(base_of(path))
    assert cfg.model == base.model
    assert cfg.runner_type == 'FlexibleRunner'
    s = cfg.strategy
    assert s.type == 'DeepSpeedStrategy'
    assert s.bf16 == dict(enabled=True) and s.gradient_clipping == 3.0
    assert s.inputs_to_half == ['inputs']
    z = s.zero_optimization
    assert z.stage == 2 and z.overlap_comm and z.contiguous_gradients
    assert cfg.optim_wrapper.type == 'DeepSpeedOptimWrapper'
    assert cfg.optim_wrapper.optimizer == dict(
        base.optim_wrapper.optimizer, type='AdamW')
    assert 'clip_grad' not in cfg.optim_wrapper  # DeepSpeed clips


@pytest.mark.parametrize('path', FSDP, ids=lambda p: p.name[:40])
def test_fsdp_variants(path):
    cfg, base = load(path), load(base_of(path))
    assert cfg.model == base.model
    assert cfg.runner_type == 'FlexibleRunner'
    s = cfg.strategy
    assert s.type == 'FSDPStrategy' and s.state_dict_cfg == 'full'
    assert s.model_wrapper.type == 'ScalarSafeFSDP'
    assert s.model_wrapper.use_orig_params
    assert cfg.optim_wrapper.optimizer.lr == base.optim_wrapper.optimizer.lr
    # mmengine's clipping would see one shard of the gradients
    assert 'clip_grad' not in cfg.optim_wrapper


@pytest.mark.parametrize('path', FSDP, ids=lambda p: p.name[:40])
def test_fsdp_strategy_builds(path, tmp_path):
    cfg = load(path)
    strategy = STRATEGIES.build(dict(cfg.strategy, work_dir=str(tmp_path)))
    assert type(strategy).__name__ == 'FSDPStrategy'
    assert strategy.model_wrapper['type'] == 'ScalarSafeFSDP'
    assert strategy._is_full_state_dict()
    # without CUDA, tools/train.py shards on the CPU
    cfg.launcher = 'pytorch'
    _fsdp_on_cpu(cfg)
    assert cfg.strategy.model_wrapper.device_id == 'cpu'


@pytest.mark.skipif(
    not HAS_DEEPSPEED,
    reason='deepspeed is not installed (pip install -r '
    'requirements/deepspeed.txt); mmengine 0.10.7 cannot build '
    'DeepSpeedStrategy without it')
@pytest.mark.parametrize('path', DEEPSPEED, ids=lambda p: p.name[:40])
def test_deepspeed_strategy_builds(path, tmp_path, monkeypatch):
    from mmengine._strategy import deepspeed as ds_strategy
    from mmengine.registry import OPTIMIZERS
    if 'DeepSpeedCPUAdam' in OPTIMIZERS.module_dict:
        # mmengine 0.10.7 registers DeepSpeed's optimizers each time it
        # builds the strategy; a second build in a process raises KeyError
        monkeypatch.setattr(ds_strategy, 'register_deepspeed_optimizers',
                            lambda: [])
    cfg = load(path)
    strategy = STRATEGIES.build(dict(cfg.strategy, work_dir=str(tmp_path)))
    assert strategy.config['zero_optimization']['stage'] == 2
    assert strategy.config['bf16'] == dict(enabled=True)
    assert strategy.config['gradient_clipping'] == 3.0


def test_train_tool_picks_the_runner():
    train = load_script('tools/train.py')
    for path in DEEPSPEED + FSDP:
        assert train.runner_class(load(path)) is FlexibleRunner
    for path in MAIN:
        assert train.runner_class(load(path)) is RSRefSegRunner
    cfg = load(RRSISD)
    cfg.runner_type = 'NoSuchRunner'
    with pytest.raises(KeyError, match='NoSuchRunner'):
        train.runner_class(cfg)


def test_train_tool_refuses_amp_with_deepspeed(monkeypatch, tmp_path):
    train = load_script('tools/train.py')
    monkeypatch.setattr(
        'sys.argv',
        ['train.py',
         str(DEEPSPEED[0]), '--amp', '--work-dir',
         str(tmp_path)])
    with pytest.raises(ValueError, match='--amp does not apply'):
        train.main()


def test_readme_and_metafile_list_every_config():
    doc = (REPO / 'docs' / 'rsrefseg2.md').read_text()
    meta = (CFG_DIR / 'metafile.yaml').read_text()
    for p in CFG_DIR.glob('*.py'):
        assert p.name in doc, p.name
        assert f'Name: {p.stem}\n' in meta, p.name
