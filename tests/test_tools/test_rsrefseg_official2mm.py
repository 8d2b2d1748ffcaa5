"""tools/model_converters/rsrefseg_official2mm.py on a state dict in the
RSRefSeg authors' layout.

The layout comes from ``fixtures/rsrefseg_official_tiny_keys.json``: the
names, shapes and dtypes of the authors' ``RefSegEncoderDecoder``
(KyanChen/RSRefSeg ``rsris/models/models.py``, ``configs_RSRefSeg/
RSRefSeg-b.py``: transformers ``SamModel`` / ``SiglipModel`` parts wrapped by
PEFT LoRA, their prompter) at the sizes of ``TINY_SAM`` / ``TINY_SIGLIP``,
written by ``fixtures/make_rsrefseg_official_keys.py`` (their module tree
rebuilt attribute by attribute, peft 0.14.0). The test fills it with random
values, converts it, and loads the result strictly into the paper config at
those sizes, in-process and through tools/test.py."""
import glob
import json
import os
import os.path as osp
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import (REPO, TINY_SAM, assert_close_to_reference, load_script,
                     run_ok)

KEYS = REPO / 'tests' / 'test_tools' / 'fixtures' / (
    'rsrefseg_official_tiny_keys.json')
PAPER_B = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')
TOOL = 'tools/model_converters/rsrefseg_official2mm.py'
SAM_PE = 'backbone.base_model.model.shared_image_embedding.' \
    'positional_embedding'
PROMPT_PE = 'sam_prompt_encoder.model.shared_embedding.positional_embedding'
IDLE = 'clip_vision_encoder.base_model.model.model.head.attention.out_proj.'


def official_state(dtype=torch.float32):
    """A random state dict with the authors' names, shapes and dtypes."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape, kind in json.load(open(KEYS))['tensors']:
        if kind == 'int64':
            state[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = (torch.randn(shape, generator=g) * 0.1).to(dtype)
    state[PROMPT_PE] = state[SAM_PE].clone()  # one pretrained buffer
    state[IDLE + 'lora_B.default.weight'].zero_()  # never gets a gradient
    return state


@pytest.fixture(scope='module')
def tiny_paper_config(tmp_path_factory, siglip_spiece):
    """The paper config at the fixture's sizes, and synthetic RRSIS-D."""
    from siglip_helpers import TINY_SIGLIP
    root = tmp_path_factory.mktemp('official')
    data = root / 'rrsisd'
    run_ok([
        sys.executable, 'tools/dataset_converters/synthetic_to_rrsisd.py',
        str(data), '--num-train', '2', '--num-val', '2', '--num-test', '3'
    ], _env())
    cfg = root / 'paper_tiny.py'
    cfg.write_text(f"""
_base_ = [{str(PAPER_B)!r}]
data_root = {str(data)!r}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch=dict(_delete_=True, **{TINY_SIGLIP!r}),
                  checkpoint=None, tokenizer={siglip_spiece!r}),
    neck=dict(in_channels=32, prompt_dims=32, dense_prompt_size=(32, 32),
              norm_cfg=norm_cfg),
    decode_head=dict(sam_arch=dict(_delete_=True, **{TINY_SAM!r}),
                     checkpoint=None))
test_pipe = [dict(type='LoadReferringImageFromFile'),
             dict(type='Resize', scale=(128, 128), keep_ratio=False),
             dict(type='LoadReferringAnnotations'),
             dict(type='PackReferringInputs')]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=test_pipe))
""")
    return root, cfg


def _env():
    return {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}


def build_model(cfg):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS.build(Config.fromfile(str(cfg)).model)


def test_every_tensor_accounted_for_and_loads_strictly(tiny_paper_config,
                                                       tmp_path):
    root, cfg = tiny_paper_config
    state = official_state()
    src, dst = tmp_path / 'theirs.pth', tmp_path / 'ours.pth'
    torch.save(state, src)
    tool = load_script(TOOL)
    report = tool.main([str(src), str(dst), '--config', str(cfg)])
    ckpt = torch.load(dst, weights_only=True)
    out = ckpt['state_dict']
    # 339 in: 336 mapped, 3 dropped; 337 out: 336 mapped + 1 added
    assert len(state) == 339 and len(out) == 337
    assert len(report['sources']) == 336
    assert sorted(report['dropped']) == sorted([
        PROMPT_PE, IDLE + 'lora_A.default.weight',
        IDLE + 'lora_B.default.weight'
    ])
    assert list(report['added']) == ['neck.logit_bias']
    assert set(report['sources'].values()) | set(
        report['dropped']) == set(state)
    assert set(report['sources']) | set(report['added']) == set(out)
    for key, source in report['sources'].items():
        assert torch.equal(out[key], state[source]), key
    assert report['ranks'] == {
        'SAM image encoder': 16,
        'SigLIP image tower': 16,
        'SigLIP text tower': 16
    }
    assert ckpt['meta']['decoder_norm_eps'] == 1e-6
    # a few correspondences written out by hand
    p, d = 'backbone.base_model.model.model.', 'decode_head.image_encoder.'
    pairs = {
        d + 'blocks.1.attn.qkv.lora_up.weight':
        p + 'layers.1.attn.qkv.lora_B.default.weight',
        d + 'neck.2.original_layer.weight':
        p + 'neck.conv2.base_layer.weight',
        d + 'neck.3.bias':
        p + 'neck.layer_norm2.bias',
        'decode_head.prompt_encoder.pe_layer.'
        'positional_encoding_gaussian_matrix':
        SAM_PE,
        'decode_head.prompt_encoder.mask_downscaling.4.weight':
        'sam_prompt_encoder.model.mask_embed.layer_norm2.weight',
        'decode_head.mask_decoder.transformer.layers.1.norm3.bias':
        'sam_mask_decoder.model.transformer.layers.1.layer_norm3.bias',
        'decode_head.mask_decoder.output_hypernetworks_mlps.2.layers.2.'
        'weight':
        'sam_mask_decoder.model.output_hypernetworks_mlps.2.proj_out.weight',
        'backbone.text_model.head.lora_down.weight':
        'clip_text_encoder.base_model.model.model.head.lora_A.default.weight',
        'backbone.vision_model.head.attention.out_proj.weight':
        IDLE + 'base_layer.weight',
        'backbone.logit_bias':
        'clip_text_encoder.base_model.model.logit_bias',
        'neck.fuse.bn.running_var':
        'prompter_down_channel.bn.running_var',
        'neck.downsample.1.conv.weight':
        'prompter_down_spatial.1.conv.weight',
        'neck.final_proj.bias':
        'prompter_down_spatial.2.conv.bias',
    }
    for ours, theirs in pairs.items():
        assert torch.equal(out[ours], state[theirs]), ours
    assert out['neck.logit_bias'].item() == 0
    # the written config: inherits the given one, transformers' eps
    test_cfg = tmp_path / 'ours.py'
    assert 'decoder_norm_eps=1e-06' in test_cfg.read_text()
    model = build_model(test_cfg).eval()
    model.load_state_dict(out, strict=True)
    assert model.decode_head.mask_decoder.transformer_norm_eps == 1e-6
    # LoRA acts as PEFT's: W0 x + alpha / r * B A x (here alpha = r = 16)
    x = torch.randn(5, 32)
    base = p + 'layers.0.mlp.lin1.'
    ref = F.linear(
        x, state[base + 'base_layer.weight'] +
        state[base + 'lora_B.default.weight']
        @ state[base + 'lora_A.default.weight'],
        state[base + 'base_layer.bias'])
    with torch.no_grad():
        ours = model.decode_head.image_encoder.blocks[0].mlp.lin1(x)
    assert torch.allclose(ours, ref, atol=1e-6)
    conv = p + 'neck.conv2.'
    img = torch.randn(1, 32, 8, 8)
    ref = F.conv2d(img, state[conv + 'base_layer.weight'], padding=1) + \
        F.conv2d(
            F.conv2d(img, state[conv + 'lora_A.default.weight'], padding=1),
            state[conv + 'lora_B.default.weight'])
    with torch.no_grad():
        ours = model.decode_head.image_encoder.neck[2](img)
    assert_close_to_reference(ours, ref)


def test_tools_test_loads_the_result_strictly(tiny_paper_config, tmp_path):
    root, cfg = tiny_paper_config
    src, dst = tmp_path / 'theirs.pth', tmp_path / 'rsrefseg_official.pth'
    torch.save(official_state(), src)
    proc = run_ok(
        [sys.executable, TOOL,
         str(src),
         str(dst), '--config',
         str(cfg)], _env())
    assert '339 tensors' in proc.stdout and '337 tensors' in proc.stdout
    work = tmp_path / 'test'
    proc = run_ok([
        sys.executable, 'tools/test.py',
        str(tmp_path / 'rsrefseg_official.py'),
        str(dst), '--work-dir',
        str(work)
    ], _env())
    log = proc.stdout + proc.stderr
    assert f'Load checkpoint from {dst}' in log
    assert 'do not match exactly' not in log  # mmengine's mismatch warning
    metrics = json.load(
        open(sorted(glob.glob(osp.join(work, '*', '*.json')))[-1]))
    assert 0 <= metrics['refer/mIoU'] <= 100


def test_deepspeed_folder_fp16(tmp_path):
    """DeepSpeed's ``<ckpt>.pth/mp_rank_00_model_states.pt`` (fp16, the
    weights under ``module``) converts to the same fp32 tensors."""
    state = official_state(torch.float16)
    folder = tmp_path / 'epoch_85.pth'
    folder.mkdir()
    torch.save(
        dict(module=state, global_steps=10),
        folder / 'mp_rank_00_model_states.pt')
    tool = load_script(TOOL)
    report = tool.main([str(folder), str(tmp_path / 'out.pth')])
    out = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert len(out) == 337
    key = 'decode_head.mask_decoder.iou_token.weight'
    assert out[key].dtype == torch.float32
    assert torch.equal(out[key], state[report['sources'][key]].float())
    assert out['neck.fuse.bn.num_batches_tracked'].dtype == torch.int64


def test_other_layouts_are_clear_errors(tmp_path):
    tool = load_script(TOOL)
    state = official_state()
    out, _ = tool.convert(state)
    cases = {
        'already in rsrefseg-mm':
        out,
        'not a checkpoint of the authors': {
            'image_encoder.pos_embed': torch.zeros(1)
        },
        r"modules without tensors \['sam_mask_decoder'\]": {
            k: v
            for k, v in state.items() if not k.startswith('sam_mask_decoder')
        },
        r'keys of no module \[\'extra\.weight\'\]':
        dict(state, **{'extra.weight': torch.zeros(1)}),
        'other than LoRA adapter':
        {k.replace('.default.', '.other.'): v
         for k, v in state.items()},
        'SAM tensors of no SamModel module':
        dict(state, **{'sam_mask_decoder.model.extra.weight': torch.zeros(1)}),
    }
    for i, (match, bad) in enumerate(cases.items()):
        path = tmp_path / f'bad{i}.pth'
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match):
            tool.main([str(path), str(tmp_path / 'out.pth')])
    lora_a = 'backbone.base_model.model.model.layers.0.attn.qkv.lora_A.' \
        'default.weight'
    mixed = dict(state)
    mixed[lora_a] = torch.zeros(8, 32)
    with pytest.raises(
            ValueError, match=r'SAM image encoder mixes LoRA '
            r'ranks \[8, 16\]'):
        tool.convert(mixed)


def test_config_mismatch_is_a_clear_error(tiny_paper_config, tmp_path):
    root, cfg = tiny_paper_config
    tool = load_script(TOOL)
    out, _ = tool.convert(official_state())
    r8 = tmp_path / 'r8.py'
    r8.write_text(f"_base_ = [{str(cfg)!r}]\n"
                  "model = dict(decode_head=dict(encoder_tuning=dict("
                  "rank=8, alpha=8)))\n")
    with pytest.raises(
            ValueError,
            match='r8.py does not fit.*of another '
            r'shape.*lora_down'):
        tool.check_with_config(out, str(r8), alpha=16)
    with pytest.raises(ValueError, match='scales by 1.*alpha 32'):
        tool.check_with_config(out, str(cfg), alpha=32)
