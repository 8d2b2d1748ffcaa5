"""tools/model_converters/rsrefseg2_official2mm.py against the RSRefSeg 2
authors' model rebuilt at tiny size (``fixtures/rsrefseg2_official_tiny.py``:
their module tree and forward, transformers' ``SiglipModel``, sam2's
``SAM2Base``, their prompter, PEFT's LoRA layout with non-zero B).

Their state dict, saved as DeepSpeed saves it, is converted, strictly
loaded into RSRefSeg (SigLIPBackbone with a tiny SigLIP 2 arch,
CascadedPrompter, SAM2PromptHead) built from a config, and both predict:
prompts, decoder logits and the logits at the input size agree within
``assert_close_to_reference``. Plausible mistakes (LoRA scaling, LoRA left
out, SigLIP normalised with ImageNet's mean / std, ``no_mem_embed`` left
out) miss by orders of magnitude.

Text: the authors tokenize with ``padding=True`` (the longest expression
of the batch) and pass the attention mask; SigLIPBackbone pads to its
``context_length`` without mask. The parity runs on two expressions of
exactly ``context_length`` tokens, where the two agree; an expression with
fewer tokens shows the difference."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from helpers import NETWORK_RTOL, assert_close_to_reference, load_script
from siglip_helpers import (TINY_SIGLIP2, hf_gemma_tokenizer, random_hf_siglip,
                            train_gemma_spiece)

FIX = load_script('tests/test_tools/fixtures/rsrefseg2_official_tiny.py')
SAM2H = load_script('tests/test_models/test_decode_heads/sam2_helpers.py')
TOOL = 'tools/model_converters/rsrefseg2_official2mm.py'
R, ALPHA = 4, 8  # LoRA scaling 2: a scaling mistake shows
SIZE = 128  # SAM 2 input; SigLIP 32 px (4x4 grid), masks 32x32
CANDIDATES = [
    'The white storage tank left of the road',
    'the second Airplane near the runway', 'a small ship in the harbor',
    'the red vehicle on the bridge', 'the large Tennis court upper left',
    'the windmill right of the dam', 'the two storage tanks near the river',
    'the Ship below the bridge'
]
SIGLIP_TARGETS = [
    'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
    'self_attn.out_proj'
]
NECK = dict(
    type='CascadedPrompter',
    text_feat_dim=32,
    img_feat_dim=32,
    prompt_feat_dim=32,
    num_heads=2,
    internal_dim=16,
    mlp_dim=32,
    imgpe_config=dict(type='learnable', size=4),
    dense_prompt_size=(32, 32))


def authors_prompter_cfg() -> dict:
    from rsrefseg_mm.models.necks.cascaded_prompter import (
        DENSE_PROMPT_CONFIG, PROMPT_ORDER, QUERY1_IMG_ORDER, QUERY_TEXT_ORDER)
    return dict(
        num_text_queries=3,
        text_query_config=dict(has_pe=True, init_type='textpool'),
        prompt_config=dict(has_pe=True, init_type='learnable'),
        text_feat_dim=32,
        two_queries_text_attn_depth=2,
        two_queries_text_attn_operation_order=list(QUERY_TEXT_ORDER),
        imgpe_config=dict(type='learnable', size=4),
        queries1_to_img_attn_depth=2,
        queries1_to_img_attn_operation_order=list(QUERY1_IMG_ORDER),
        prompt_queries2_img_attn_depth=2,
        prompt_feat_dim=32,
        prompt_queries2_img_attn_operation_order=list(PROMPT_ORDER),
        num_prompts=9,
        dense_prompt_config=dict(DENSE_PROMPT_CONFIG),
        img_feat_dim=32,
        num_heads=2,
        mlp_dim=32,
        internal_dim=16)


def randomise_norms(module: torch.nn.Module) -> None:
    """Non-trivial LayerNorm / BN parameters and statistics."""
    g = torch.Generator().manual_seed(5)
    norms = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)
    for m in module.modules():
        if isinstance(m, norms):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def model_cfg(arch: dict,
              gemma: str,
              alpha: float = ALPHA,
              image_targets=None) -> dict:
    """Our RSRefSeg 2 at the fixture's sizes, the authors' LoRA targets."""
    lora = dict(mode='lora', rank=R, alpha=alpha, drop_rate=0.0)
    return dict(
        type='RSRefSeg',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=None,
            std=None,
            bgr_to_rgb=True,
            size=(SIZE, SIZE),
            pad_val=0,
            seg_pad_val=255),
        backbone=dict(
            type='SigLIPBackbone',
            arch=arch,
            checkpoint=None,
            tokenizer=gemma,
            tokenizer_cfg=dict(lowercase=False),
            image_tuning=dict(
                **lora,
                targets=image_targets
                or SIGLIP_TARGETS + ['head.mlp.fc1', 'head.mlp.fc2']),
            text_tuning=dict(**lora, targets=SIGLIP_TARGETS + ['head'])),
        neck=NECK,
        decode_head=dict(
            type='SAM2PromptHead',
            sam2_arch=SAM2H.TINY_SAM2,
            checkpoint=None,
            encoder_tuning=lora),
        test_cfg=dict(mode='whole'))


def write_config(path, cfg: dict) -> str:
    path.write_text("custom_imports = dict(imports=['rsrefseg_mm'], "
                    "allow_failed_imports=False)\ndefault_scope = 'mmseg'\n"
                    f'model = {cfg!r}\n')
    return str(path)


def build(cfg: dict, state: dict = None):
    init_default_scope('mmseg')
    model = MODELS.build(Config(dict(model=cfg)).model).eval()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def ours_predict(model, images: torch.Tensor, texts) -> dict:
    metas = [
        dict(
            text=t,
            ori_shape=images.shape[2:],
            img_shape=images.shape[2:],
            pad_shape=images.shape[2:]) for t in texts
    ]
    x = model.extract_feat(images, metas)
    text_global, text_feats, text_mask = model.backbone.encode_text(texts)
    return dict(
        sparse_prompts=x['sparse_prompts'],
        dense_prompts=x['dense_prompts'],
        seg_mask=model.decode_head.forward(x),
        seg_logits=model.encode_decode(images, metas),
        text_feats=text_feats,
        text_global=text_global)


def miss(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference in units of the parity tolerance."""
    tol = NETWORK_RTOL * expected.abs().max().item()
    return (actual - expected).abs().max().item() / tol


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Their tiny model, its DeepSpeed checkpoint, our config, the inputs
    and their predictions."""
    root = tmp_path_factory.mktemp('rsrefseg2_official')
    gemma = train_gemma_spiece(str(root))
    tokenizer = hf_gemma_tokenizer(gemma)
    lengths = {t: len(tokenizer(t)['input_ids']) for t in CANDIDATES}
    pairs = [(a, b) for i, a in enumerate(CANDIDATES)
             for b in CANDIDATES[i + 1:] if lengths[a] == lengths[b]]
    assert pairs, f'no two candidates of one length: {lengths}'
    texts = list(pairs[0])
    n = lengths[texts[0]]
    short = min(CANDIDATES, key=lambda t: lengths[t])
    assert lengths[short] < n
    arch = dict(TINY_SIGLIP2, context_length=n)

    torch.manual_seed(0)
    siglip = random_hf_siglip(arch)
    theirs = FIX.build_authors_model(siglip, SAM2H.tiny_sam2_base(),
                                     authors_prompter_cfg(), R, ALPHA)
    randomise_norms(theirs.prompter)
    state = theirs.state_dict()
    folder = root / 'epoch_300.pth'
    folder.mkdir()
    torch.save(
        dict(module=state, global_steps=3),
        folder / 'mp_rank_00_model_states.pt')

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), generator=g).float()
    ref = FIX.authors_predict(theirs, images / 255, texts, tokenizer, 32)
    return dict(
        root=root,
        gemma=gemma,
        tokenizer=tokenizer,
        arch=arch,
        theirs=theirs,
        state=state,
        folder=folder,
        images=images,
        texts=texts,
        short=short,
        ref=ref,
        cfg=model_cfg(arch, gemma))


@pytest.fixture(scope='module')
def converted(world):
    """The tool on the DeepSpeed folder, checked with --config."""
    cfg = write_config(world['root'] / 'ours_tiny.py', world['cfg'])
    dst = world['root'] / 'ours.pth'
    report = load_script(TOOL).main([
        str(world['folder']),
        str(dst), '--config', cfg, '--lora-alpha',
        str(ALPHA)
    ])
    ckpt = torch.load(dst, weights_only=True)
    return report, ckpt


def test_every_tensor_accounted_for(world, converted):
    report, ckpt = converted
    state, out = world['state'], ckpt['state_dict']
    dropped = {
        'clip_vision_encoder.base_model.model.model.head.attention.'
        'out_proj.lora_A.default.weight',
        'clip_vision_encoder.base_model.model.model.head.attention.'
        'out_proj.lora_B.default.weight', 'decode_head.logit_scale1',
        'decode_head.logit_bias1'
    }
    assert set(report['dropped']) == dropped
    assert set(report['sources'].values()) | dropped == set(state)
    assert set(report['sources']) == set(out)
    assert len(out) == len(state) - len(dropped)
    for key, source in report['sources'].items():
        assert torch.equal(out[key], state[source]), key
    assert report['ranks'] == {
        'SAM 2 image encoder': R,
        'SigLIP image tower': R,
        'SigLIP text tower': R
    }
    assert ckpt['meta']['lora_alpha'] == ALPHA
    p = 'backbone.model.image_encoder.base_model.model.'
    v = 'clip_vision_encoder.base_model.model.model.'
    t = 'clip_text_encoder.base_model.model.'
    pairs = {
        'decode_head.image_encoder.trunk.blocks.1.attn.qkv.lora_up.weight':
        p + 'trunk.blocks.1.attn.qkv.lora_B.default.weight',
        'decode_head.image_encoder.neck.convs.0.conv.original_layer.bias':
        p + 'neck.convs.0.conv.base_layer.bias',
        'decode_head.image_encoder.trunk.patch_embed.proj.weight':
        p + 'trunk.patch_embed.proj.weight',
        'decode_head.no_mem_embed':
        'backbone.model.no_mem_embed',
        'decode_head.mask_decoder.conv_s0.weight':
        'backbone.model.sam_mask_decoder.conv_s0.weight',
        'decode_head.prompt_encoder.pe_layer.'
        'positional_encoding_gaussian_matrix':
        'backbone.model.sam_prompt_encoder.pe_layer.'
        'positional_encoding_gaussian_matrix',
        'backbone.vision_model.head.attention.out_proj.weight':
        v + 'head.attention.out_proj.base_layer.weight',
        'backbone.vision_model.head.mlp.fc2.lora_down.weight':
        v + 'head.mlp.fc2.lora_A.default.weight',
        'backbone.text_model.head.lora_up.weight':
        t + 'model.head.lora_B.default.weight',
        'backbone.logit_scale':
        t + 'logit_scale',
        'neck.query_text_layers.1.ops.norm_query2_5.bias':
        'prompter.two_queries_text_attn_layers.1.norm_query2_5.bias',
        'neck.dense_conv.1.running_var':
        'prompter.dense_prompt_conv.1.running_var',
        'neck.region_text_logit_scale':
        'decode_head.logit_scale2',
    }
    for ours, theirs in pairs.items():
        assert report['sources'][ours] == theirs, ours


def test_predictions_equal_the_authors(world, converted):
    _, ckpt = converted
    model = build(world['cfg'], ckpt['state_dict'])
    ref = world['ref']
    # the expressions have exactly context_length tokens: same ids
    ids, mask = model.backbone.tokenize(world['texts'])
    assert torch.equal(ids, ref['text_ids']) and bool(mask.all())
    out = ours_predict(model, world['images'], world['texts'])
    for key in ('text_feats', 'text_global', 'sparse_prompts', 'dense_prompts',
                'seg_mask', 'seg_logits'):
        assert out[key].shape == ref[key].shape, key
        ratio = assert_close_to_reference(out[key], ref[key], what=key)
        print(f'{key}: max |diff| '
              f'{(out[key] - ref[key]).abs().max().item():.2g}, largest '
              f'value {ref[key].abs().max().item():.3g}, {ratio:.1%} of the '
              'tolerance')
    assert out['seg_mask'].shape == (2, 1, 32, 32)
    # not a trivial agreement: the two expressions' masks differ
    assert miss(ref['seg_mask'][0], ref['seg_mask'][1]) > 1e3


def test_plausible_mistakes_miss_by_far(world, converted):
    """What the parity guards against, in units of its tolerance."""
    _, ckpt = converted
    state, ref = ckpt['state_dict'], world['ref']
    images, texts = world['images'], world['texts']
    misses = {}
    # LoRA scaled by 1 (alpha = r) instead of alpha / r = 2
    model = build(model_cfg(world['arch'], world['gemma'], alpha=R), state)
    misses['lora_scaling'] = ours_predict(model, images, texts)['seg_mask']
    # LoRA left out (base weights only)
    no_lora = {
        k: torch.zeros_like(v) if k.endswith('lora_up.weight') else v
        for k, v in state.items()
    }
    model = build(world['cfg'], no_lora)
    misses['lora_left_out'] = ours_predict(model, images, texts)['seg_mask']
    # no_mem_embed left out (as if dropped with SAM 2's video tensors)
    model = build(
        world['cfg'],
        dict(
            state, **{
                'decode_head.no_mem_embed':
                torch.zeros(state['decode_head.no_mem_embed'].shape)
            }))
    misses['no_mem_embed'] = ours_predict(model, images, texts)['seg_mask']
    # the authors' forward with ImageNet's mean / std on the SigLIP input
    imagenet = FIX.authors_predict(
        world['theirs'],
        images / 255,
        texts,
        world['tokenizer'],
        32,
        siglip_mean=FIX.IMAGENET_MEAN,
        siglip_std=FIX.IMAGENET_STD)
    misses['siglip_imagenet_norm'] = imagenet['seg_mask']
    ratios = {k: miss(v, ref['seg_mask']) for k, v in misses.items()}
    print('mask-logit misses / tolerance:', ratios)
    for k, ratio in ratios.items():
        assert ratio > 100, (k, ratio)


def test_padding_to_the_context_length_differs(world, converted):
    """An expression shorter than ``context_length``: the authors' text
    tower sees its tokens alone (no padding with one expression) and pools
    its EOS; SigLIPBackbone pads to ``context_length`` without mask and
    pools the last pad, so features and masks differ."""
    _, ckpt = converted
    model = build(world['cfg'], ckpt['state_dict'])
    text, image = [world['short']], world['images'][:1]
    ref = FIX.authors_predict(world['theirs'], image / 255, text,
                              world['tokenizer'], 32)
    ours = ours_predict(model, image, text)
    n = ref['text_ids'].shape[1]
    assert n < world['arch']['context_length']
    ratios = {
        'text_feats': miss(ours['text_feats'][:, :n], ref['text_feats']),
        'text_global': miss(ours['text_global'], ref['text_global']),
        'seg_mask': miss(ours['seg_mask'], ref['seg_mask'])
    }
    print('padded expression, misses / tolerance:', ratios)
    assert all(r > 100 for r in ratios.values()), ratios
    # the difference is the padding: the tower on the unpadded ids agrees
    with torch.no_grad():
        glob, feats = model.backbone.text_model(ref['text_ids'])
    assert_close_to_reference(feats, ref['text_feats'], what='token feats')
    assert_close_to_reference(glob, ref['text_global'], what='pooled')
    # the config the tool writes beside the checkpoint runs each expression
    # at its own length (text_padding='none'): the authors' batch of one,
    # features and masks included, for the short expression in a batch
    # with the longer ones too
    written = Config.fromfile(str(world['root'] / 'ours.py'))
    assert written.model.backbone.text_padding == 'none'
    model = build(written.model.to_dict(), ckpt['state_dict'])
    texts = [world['short']] + list(world['texts'])
    ours = ours_predict(model, world['images'][[0] * len(texts)], texts)
    for what in ('text_feats', 'text_global', 'seg_mask', 'dense_prompts'):
        got = ours[what][:1]
        if what == 'text_feats':
            got, pad = got[:, :n], got[:, n:]
            assert not pad.any()  # zero beyond the expression
        assert_close_to_reference(got, ref[what], what=what)


def test_file_layouts_and_refusals(world, converted, tmp_path):
    tool = load_script(TOOL)
    _, ckpt = converted
    state = world['state']
    # a plain state dict and a bf16 DeepSpeed file give the same tensors
    torch.save(state, tmp_path / 'plain.pth')
    tool.main([str(tmp_path / 'plain.pth'), str(tmp_path / 'plain_out.pth')])
    plain = torch.load(tmp_path / 'plain_out.pth', weights_only=True)
    assert plain['state_dict'].keys() == ckpt['state_dict'].keys()
    assert all(
        torch.equal(v, ckpt['state_dict'][k])
        for k, v in plain['state_dict'].items())
    bf16 = {
        k: v.bfloat16() if v.is_floating_point() else v
        for k, v in state.items()
    }
    out, report = tool.convert(bf16)
    key = 'decode_head.mask_decoder.iou_token.weight'
    assert out[key].dtype == torch.float32
    assert torch.equal(out[key], bf16[report['sources'][key]].float())

    cases = {
        'already in rsrefseg-mm':
        ckpt['state_dict'],
        'first RSRefSeg': {
            'prompter_down_channel.conv.weight': torch.zeros(1)
        },
        'not a checkpoint of the authors': {
            'image_encoder.pos_embed': torch.zeros(1)
        },
        r"modules without tensors \['prompter'\]":
        {k: v
         for k, v in state.items() if not k.startswith('prompter.')},
        r"keys of no module \['extra\.weight'\]":
        dict(state, **{'extra.weight': torch.zeros(1)}),
        'other than LoRA adapter':
        {k.replace('.default.', '.other.'): v
         for k, v in state.items()},
        'of no image-model module':
        dict(state, **{'backbone.model.extra.weight': torch.zeros(1)}),
        'unknown SigLIP tensor':
        dict(
            state, **{
                'clip_text_encoder.base_model.model.projector.weight':
                torch.zeros(1)
            }),
        'unknown RSRefSeg 2 prompter key':
        dict(state, **{'prompter.extra': torch.zeros(1)}),
    }
    for i, (match, bad) in enumerate(cases.items()):
        with pytest.raises(ValueError, match=match):
            tool.convert(bad, f'bad{i}.pth')
    lora_a = 'backbone.model.image_encoder.base_model.model.trunk.blocks.0.' \
        'attn.qkv.lora_A.default.weight'
    with pytest.raises(ValueError, match=r'mixes LoRA ranks \[2, 4\]'):
        tool.convert(dict(state, **{lora_a: torch.zeros(2, 8)}))
    # a config without the authors' pooling-head LoRA, or another alpha
    cfg = write_config(
        tmp_path / 'no_head_lora.py',
        model_cfg(world['arch'], world['gemma'], image_targets=SIGLIP_TARGETS))
    with pytest.raises(
            ValueError,
            match=r'no_head_lora.py does not fit.*unexpected.*head\.mlp'):
        tool.official.check_with_config(ckpt['state_dict'], cfg, ALPHA)
    cfg = write_config(tmp_path / 'ours.py', world['cfg'])
    with pytest.raises(ValueError, match='scales by 2.*alpha 16'):
        tool.official.check_with_config(ckpt['state_dict'], cfg, 16)
