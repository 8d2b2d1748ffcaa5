"""SAM2PromptHead: parity with the sam2 package's SAM2ImagePredictor, strict
loading of official-format files and folders, LoRA targets, training."""
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.models.peft.lora import LoRALinear
from mmseg.registry import MODELS
from sam2_helpers import (TINY_SAM2, TINY_SAM2_FAST, official_file,
                          tiny_sam2_base)

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.models.decode_heads import SAM2PromptHead
from rsrefseg_mm.models.decode_heads.base_prompt_head import ABSENT_LOGIT
from rsrefseg_mm.models.peft import LoRAConv2d
from rsrefseg_mm.models.sam2 import (SAM2_ARCHS, SAM2_CONFIGS,
                                     convert_sam2_state_dict,
                                     sam2_arch_settings)
from rsrefseg_mm.utils import UnsafeCheckpointError
from helpers import (NETWORK_RTOL, assert_close_to_reference,
                     crafted_checkpoint, referring_samples)

FROZEN = dict(mode='frozen')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """(SAM2Base, its official-format file)."""
    model = tiny_sam2_base()
    folder = tmp_path_factory.mktemp('sam2')
    return model, official_file(model, folder / 'sam2.1_hiera_tiny.pt')


def error_ratio(actual, expected):
    """max |actual - expected| over the parity tolerance (> 1 fails)."""
    tol = NETWORK_RTOL * expected.abs().max()
    return float((actual - expected).abs().max() / tol)


def prompts(model, boxes, points, labels):
    """SAM 2's sparse embeddings of box + point prompts, as
    ``SAM2ImagePredictor._predict`` builds them (box corners first, then
    the points, padded with a not-a-point), one row per image."""
    coords = torch.cat([boxes.reshape(-1, 2, 2), points], dim=1)
    box_labels = torch.tensor([[2, 3]]).expand(len(boxes), -1)
    labels = torch.cat([box_labels, labels], dim=1).int()
    with torch.no_grad():
        sparse, _ = model.sam_prompt_encoder(
            points=(coords, labels), boxes=None, masks=None)
    return sparse


def test_parity_with_sam2_image_predictor(reference):
    """Two images, each with its box + points and a dense mask prompt:
    the head's features, mask logits and object scores equal the sam2
    package's SAM2ImagePredictor on the same weights; dropping the
    normalisation, no_mem_embed or the high-resolution features, or
    pairing an image with the other's features, is far outside the
    tolerance."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    model, path = reference
    head = SAM2PromptHead(
        sam2_arch=TINY_SAM2, checkpoint=path, encoder_tuning=FROZEN).eval()
    predictor = SAM2ImagePredictor(model)
    # the predictor assumes 1024 px (256, 128, 64 feature sizes)
    predictor._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), np.uint8) for _ in '01']
    boxes = torch.tensor([[10., 20., 100., 110.], [40., 8., 120., 64.]])
    points = torch.tensor([[[30., 40.], [90., 70.]], [[64., 30.], [5., 5.]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    dense = torch.from_numpy(
        rng.standard_normal((2, 1, 32, 32)).astype(np.float32) * 4)

    predictor.set_image_batch(images)
    _, _, theirs = predictor.predict_batch(
        point_coords_batch=list(points.numpy()),
        point_labels_batch=list(labels.numpy()),
        box_batch=list(boxes.numpy()),
        mask_input_batch=list(dense.numpy()),
        multimask_output=False,
        return_logits=True)
    theirs = torch.from_numpy(np.stack(theirs))  # (2, 1, 32, 32)
    ref_feats = predictor._features
    sparse = prompts(model, boxes, points, labels)
    with torch.no_grad():
        _, dense_emb = model.sam_prompt_encoder(None, None, dense)
        _, _, _, ref_scores = model.sam_mask_decoder(
            image_embeddings=ref_feats['image_embed'],
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_emb,
            multimask_output=False,
            repeat_image=False,
            high_res_features=ref_feats['high_res_feats'])
    assert float(theirs.abs().max()) < 32  # the predictor clamps at 32

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        feats = head.encode_image(x)
        inputs = dict(sparse_prompts=sparse, dense_prompts=dense)
        ours, scores = head.forward_with_presence(dict(**feats, **inputs))
        from_images = head(dict(images=x, **inputs))
    assert ours.shape == (2, 1, 32, 32)
    torch.testing.assert_close(from_images, ours, rtol=0, atol=0)
    outputs = dict(
        image_embeddings=(feats['image_embeddings'], ref_feats['image_embed']),
        high_res_feats_s0=(feats['high_res_feats_s0'],
                           ref_feats['high_res_feats'][0]),
        high_res_feats_s1=(feats['high_res_feats_s1'],
                           ref_feats['high_res_feats'][1]),
        mask_logits=(ours, theirs),
        object_scores=(scores, ref_scores[:, 0]))
    for what, (a, e) in outputs.items():
        assert_close_to_reference(a, e, what=what)

    def masks(feats=feats, images=None):
        with torch.no_grad():
            if images is not None:
                feats = head.encode_image(images)
            return head(dict(**feats, **inputs))

    wrong = dict(
        no_mem_embed=masks(
            dict(
                feats,
                image_embeddings=feats['image_embeddings'] -
                head.no_mem_embed.view(1, -1, 1, 1))),
        no_high_res=masks(
            dict(
                feats,
                high_res_feats_s0=feats['high_res_feats_s0'] * 0,
                high_res_feats_s1=feats['high_res_feats_s1'] * 0)),
        other_image_high_res=masks(
            dict(
                feats,
                high_res_feats_s0=feats['high_res_feats_s0'].flip(0),
                high_res_feats_s1=feats['high_res_feats_s1'].flip(0))),
        images_in_0_1=masks(images=x / 255 * head.pixel_std + head.pixel_mean),
        no_std=masks(
            images=(x - head.pixel_mean) * head.pixel_std + head.pixel_mean))
    for what, logits in wrong.items():
        assert error_ratio(logits, theirs) > 20, what


def test_strict_load_file_and_folder(reference, tmp_path):
    """Every image tensor of an official-format file lands in the head (the
    video-only ones are skipped); a Hugging Face style folder resolves to
    its .pt."""
    model, path = reference
    expected, skipped = convert_sam2_state_dict(model.state_dict())
    assert skipped and all(
        k.startswith(('memory_', 'obj_ptr', 'mask_downsample', 'maskmem',
                      'no_mem_pos', 'no_obj')) for k in skipped)
    folder = tmp_path / 'sam2.1-hiera-tiny'
    folder.mkdir()
    shutil.copy(path, folder / 'sam2.1_hiera_tiny.pt')
    (folder / 'sam2.1_hiera_t.yaml').write_text('# config\n')
    for source in (path, str(folder)):
        head = SAM2PromptHead(
            sam2_arch=TINY_SAM2, checkpoint=source, encoder_tuning=FROZEN)
        own = head.state_dict()
        assert set(expected) == set(own)
        for key, value in expected.items():
            assert torch.equal(own[key], value), key
    shutil.copy(path, folder / 'other.pt')
    with pytest.raises(FileNotFoundError, match='2 .pt files'):
        SAM2PromptHead(sam2_arch=TINY_SAM2, checkpoint=str(folder))


def test_refuses_unknown_missing_and_misshapen(reference, tmp_path):
    model, _ = reference
    state = model.state_dict()
    cases = dict(
        unknown=({
            **state, 'extra_head.weight': torch.zeros(2)
        }, 'extra_head.weight'),
        missing=({k: v
                  for k, v in state.items() if 'conv_s0.weight' not in k},
                 'mask_decoder.conv_s0.weight'),
    )
    for name, (sd, key) in cases.items():
        path = str(tmp_path / f'{name}.pt')
        torch.save({'model': sd}, path)
        with pytest.raises(ValueError) as err:
            SAM2PromptHead(sam2_arch=TINY_SAM2, checkpoint=path)
        msg = str(err.value)
        assert path in msg and "'custom'" in msg and key in msg, msg
        assert 'strict_load=False' in msg
        # strict_load=False loads the rest
        SAM2PromptHead(sam2_arch=TINY_SAM2, checkpoint=path, strict_load=False)
    path = str(tmp_path / 'unknown.pt')
    with pytest.raises(ValueError, match='differ in shape'):
        SAM2PromptHead(
            sam2_arch=dict(TINY_SAM2, encoder_embed_dim=16), checkpoint=path)


def test_missing_file_says_what_to_download(tmp_path):
    """Refused before the (large) model is built."""
    missing = str(tmp_path / 'sam2.1_hiera_large.pt')
    with pytest.raises(FileNotFoundError) as err:
        SAM2PromptHead(sam2_arch='large', checkpoint=missing)
    msg = str(err.value)
    for part in (missing, 'sam2.1_hiera_large.pt',
                 'checkpoints/sam2.1_hiera_large.pt',
                 'facebook/sam2.1-hiera-large', 'checkpoint=None'):
        assert part in msg, (part, msg)


def test_crafted_pickle_is_refused(tmp_path):
    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        SAM2PromptHead(sam2_arch=TINY_SAM2_FAST, checkpoint=path)
    assert not marker.exists()


def test_arch_presets_match_sam2_configs():
    import sam2
    from omegaconf import OmegaConf
    for arch, config in SAM2_CONFIGS.items():
        model = OmegaConf.load(osp.join(sam2.__path__[0], config)).model
        trunk = model.image_encoder.trunk
        neck = model.image_encoder.neck
        ours = sam2_arch_settings(arch)
        assert ours['encoder_embed_dim'] == trunk.embed_dim, arch
        assert ours['encoder_num_heads'] == trunk.num_heads, arch
        for key, name, default in (
            ('encoder_stages', 'stages', (2, 3, 16, 3)),
            ('encoder_global_attn_blocks', 'global_att_blocks', (12, 16, 20)),
            ('encoder_window_spec', 'window_spec', (8, 4, 14, 7)),
            ('encoder_window_pos_embed_size',
             'window_pos_embed_bkg_spatial_size', (14, 14)),
        ):  # Hiera's defaults where the yaml has none
            assert tuple(ours[key]) == tuple(trunk.get(name, default)), \
                (arch, key)
        assert ours['prompt_embed_dim'] == neck.d_model
        assert tuple(ours['fpn_top_down_levels']) == tuple(
            neck.fpn_top_down_levels)
        assert neck.fpn_interp_model == 'nearest'
        assert model.image_encoder.scalp == 1
        assert ours['image_size'] == model.image_size
        assert model.use_high_res_features_in_sam
        assert model.directly_add_no_mem_embed
        assert model.pred_obj_scores and model.pred_obj_scores_mlp
        assert model.iou_prediction_use_sigmoid
        channels = [ours['encoder_embed_dim'] * 2**i for i in range(4)]
        assert list(neck.backbone_channel_list) == channels[::-1]
    assert set(SAM2_ARCHS) == set(SAM2_CONFIGS)


def test_lora_wraps_trunk_attention_and_neck_convs():
    head = SAM2PromptHead(sam2_arch=TINY_SAM2_FAST)  # default LoRA tuning
    wrapped = {
        n: type(m)
        for n, m in head.image_encoder.named_modules()
        if isinstance(m, (LoRALinear, LoRAConv2d))
    }
    blocks = len(head.image_encoder.trunk.blocks)
    expected = {
        f'trunk.blocks.{i}.attn.{p}': LoRALinear
        for i in range(blocks) for p in ('qkv', 'proj')
    }
    expected.update({f'neck.convs.{i}.conv': LoRAConv2d for i in range(4)})
    assert set(wrapped) == set(expected)
    for name, cls in wrapped.items():
        assert issubclass(cls, expected[name]), name
    # the stage transitions' blocks.N.proj are not attention projections
    assert any(
        isinstance(blk.proj, torch.nn.Linear)
        for blk in head.image_encoder.trunk.blocks if hasattr(blk, 'proj'))
    for name, p in head.named_parameters():
        trainable = name.startswith(('prompt_encoder.', 'mask_decoder.')) \
            or name == 'no_mem_embed' or '.lora_' in name
        assert p.requires_grad == trainable, name


def build_fast(**kwargs):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = dict(
        type='SAM2PromptHead',
        sam2_arch=TINY_SAM2_FAST,
        encoder_tuning=dict(mode='lora', rank=4, alpha=4),
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ])
    cfg.update(kwargs)
    return MODELS.build(cfg)


def fast_inputs(B=2):
    torch.manual_seed(1)
    return dict(
        images=torch.rand(B, 3, 96, 96) * 255,
        sparse_prompts=torch.randn(B, 5, 32),
        dense_prompts=torch.randn(B, 1, 32, 32))


def test_registered_build_trains_one_step():
    head = build_fast(presence_cfg=dict(loss_weight=1.0)).train()
    assert isinstance(head, SAM2PromptHead)
    samples = referring_samples(2, 96, box=(20, 60, 30, 70), ignore_rows=4)
    losses = head.loss(fast_inputs(), samples, None)
    assert set(losses) == {
        'loss_ce', 'loss_dice', 'acc_seg', 'loss_presence', 'acc_presence'
    }
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    trunk = head.image_encoder.trunk
    for p in (trunk.blocks[0].attn.qkv.lora_up.weight,
              trunk.blocks[-1].attn.proj.lora_up.weight,
              head.image_encoder.neck.convs[1].conv.lora_up.weight,
              head.mask_decoder.conv_s0.weight,
              head.mask_decoder.conv_s1.weight,
              head.mask_decoder.pred_obj_score_head.layers[0].weight,
              head.prompt_encoder.mask_downscaling[0].weight,
              head.no_mem_embed):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert trunk.blocks[0].attn.qkv.original_layer.weight.grad is None
    optim = torch.optim.SGD([p for p in head.parameters() if p.requires_grad],
                            lr=0.1)
    before = head.mask_decoder.conv_s0.weight.detach().clone()
    optim.step()
    assert not torch.equal(before, head.mask_decoder.conv_s0.weight)


def test_checkpointing_and_presence_gating():
    head = build_fast(
        encoder_tuning=dict(mode='full'),
        with_cp=True,
        presence_cfg=dict(threshold=0.5))
    inputs = fast_inputs()
    head.train()
    with_cp, _ = head.forward_with_presence(inputs)
    head.with_cp = False
    plain, _ = head.forward_with_presence(inputs)
    torch.testing.assert_close(with_cp, plain)
    head.eval()
    with torch.no_grad():
        masks, scores = head.forward_with_presence(dict(inputs))
        head.mask_decoder.pred_obj_score_head.layers[2].bias.fill_(-1e3)
        gated_inputs = dict(inputs)
        gated = head(gated_inputs)
    assert torch.all(gated == ABSENT_LOGIT)
    assert gated_inputs['presence'].shape == (2, )
    assert float(gated_inputs['presence'].max()) < 0.5


def test_refuses_sam1_features_and_bad_arch():
    head = build_fast().eval()
    inputs = fast_inputs()
    with pytest.raises(KeyError, match='high_res_feats_s0'):
        head(
            dict(
                image_embeddings=torch.zeros(2, 32, 8, 8),
                sparse_prompts=inputs['sparse_prompts']))
    with pytest.raises(ValueError, match='sparse prompts must be'):
        head(dict(images=inputs['images'], sparse_prompts=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match='multiple of 32'):
        sam2_arch_settings(dict(image_size=100))
    with pytest.raises(ValueError, match='Unknown SAM 2 arch'):
        sam2_arch_settings('vit_b')
