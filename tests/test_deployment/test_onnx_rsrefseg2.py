"""ONNX export of an RSRefSeg 2 model: the tiny RSRefSeg 2 config (the
CascadedPrompter neck) with a tiny SAM 2.1 head (``SAM2PromptHead``:
Hiera + FPN, high-resolution features, object-score presence, LoRA on the
trunk merged at export), random weights. ONNX Runtime gives PyTorch's
logits, presence and masks, on one image and on a sliding-window scene."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from rasterio.transform import from_origin

from rsrefseg_core.scene import ScenePredictor
from rsrefseg_deploy import OnnxReferringPredictor
from rsrefseg_mm.apis import ReferringPredictor, init_referring_model
from rsrefseg_mm.models.decode_heads import SAM2PromptHead
from rsrefseg_mm.models.necks import CascadedPrompter
from helpers import (REPO, assert_close_to_reference, load_script,
                     perturbed_model, spread_presence, write_tif)

RSREFSEG2_TINY = REPO / 'configs' / 'rsrefseg2' / (
    'rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-'
    '128x128.py')
#: A 5-block Hiera of width 8, a 32-channel SAM 2.1 decoder, 128 px input
#: (8x8 image embedding, 32x32 masks and dense prompt), presence from the
#: object-score head.
SAM2_HEAD = dict(
    type='SAM2PromptHead',
    sam2_arch=dict(
        encoder_embed_dim=8,
        encoder_stages=(1, 1, 2, 1),
        encoder_global_attn_blocks=(3, ),
        image_size=128,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32),
    checkpoint=None,
    encoder_tuning=dict(mode='lora', rank=4, alpha=4),
    presence_cfg=dict(threshold=0.5))
TEXTS = [
    f'the {c} {s}' for c in ('red', 'blue', 'green', 'white')
    for s in ('circle', 'square')
]


@pytest.fixture(scope='module')
def image():
    return np.random.default_rng(0).integers(0, 255, (96, 120, 3), np.uint8)


@pytest.fixture(scope='module')
def exported2(tmp_path_factory, image):
    root = tmp_path_factory.mktemp('rsrefseg2')
    config = root / 'rsrefseg2_sam2_tiny.py'
    config.write_text(f"""
_base_ = [{str(RSREFSEG2_TINY)!r}]
model = dict(
    neck=dict(prompt_feat_dim=32, dense_prompt_size=(32, 32)),
    decode_head=dict(_delete_=True, **{SAM2_HEAD!r}))
""")
    model = perturbed_model(str(config))
    spread_presence(model, image, TEXTS)
    ckpt = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = root / 'onnx'
    tool = load_script('tools/deployment/export_onnx.py')
    info = tool.main([
        str(config),
        str(ckpt), '--out-dir',
        str(out), '--dynamic-expressions'
    ])
    return init_referring_model(str(config), str(ckpt)), str(out), info


def test_graphs_carry_the_sam2_features(exported2):
    model, out, info = exported2
    assert isinstance(model.neck, CascadedPrompter)
    assert isinstance(model.decode_head, SAM2PromptHead)
    assert info['lora_layers_merged'] > 0  # the Hiera trunk's LoRA
    with open(f'{out}/deploy.json') as f:
        graphs = json.load(f)['graphs']
    high_res = ['high_res_feats_s0', 'high_res_feats_s1']
    assert graphs['image_encoder']['outputs'] == [
        'img_feats', 'image_embeddings'
    ] + high_res
    assert graphs['decoder']['inputs'] == [
        'img_feats', 'image_embeddings', 'text_global', 'text_feats',
        'text_mask'
    ] + high_res
    assert graphs['decoder']['outputs'] == ['logits', 'global_map', 'presence']
    for name in graphs:
        onnx.checker.check_model(f'{out}/{name}.onnx')


def test_graphs_equal_pytorch(exported2):
    """The three graphs against ``encode_image`` / ``encode_text`` /
    ``decode``: features, logits, global map and presence."""
    model, out, _ = exported2
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    x = x * 255
    sessions = {
        name: ort.InferenceSession(f'{out}/{name}.onnx')
        for name in ('image_encoder', 'text_encoder', 'decoder')
    }
    arrays = dict(
        image=x.numpy(), token_ids=model.backbone.tokenizer(TEXTS).numpy())
    for name, session in sessions.items():
        feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
        outputs = session.run(None, feeds)
        arrays.update(zip([o.name for o in session.get_outputs()], outputs))
    with torch.no_grad():
        embeddings = model.encode_image(x)
        logits, feats = model.decode(embeddings, TEXTS)
    for name in ('img_feats', 'image_embeddings', 'high_res_feats_s0',
                 'high_res_feats_s1'):
        assert_close_to_reference(arrays[name], embeddings[name], what=name)
    present = feats['presence'].numpy() >= 0.5
    assert 0 < present.sum() < len(TEXTS)  # gated and kept ones compared
    np.testing.assert_allclose(
        arrays['presence'], feats['presence'].numpy(), atol=1e-5)
    assert_close_to_reference(
        arrays['logits'][present], logits[present], what='mask logits')
    # the absent ones are gated to the same empty-mask logit
    np.testing.assert_array_equal(arrays['logits'][~present],
                                  logits[~present].numpy())
    np.testing.assert_allclose(
        arrays['global_map'], feats['global_map'].numpy(), atol=1e-5)


def test_predictor_equals_pytorch(exported2, image):
    """OnnxReferringPredictor against ReferringPredictor: presence within
    1e-5, probabilities within 1e-3, masks equal but at <= 0.1 % of
    pixels, the absent expressions empty in both."""
    model, out, _ = exported2
    ours = OnnxReferringPredictor(out)
    ours.set_image(image)
    theirs = ReferringPredictor(model)
    theirs.set_image(image)
    got, want = ours.predict(TEXTS), theirs.predict(TEXTS)
    presence = [g.presence for g in got]
    assert sum(p < 0.5 for p in presence) == len(TEXTS) // 2, presence
    for g, w in zip(got, want):
        assert abs(g.presence - w.metainfo['presence']) <= 1e-5, g.text
        prob = w.seg_logits.data[0].numpy()
        assert np.abs(g.probability - prob).max() <= 1e-3, g.text
        mask = w.pred_sem_seg.data[0].numpy()
        assert (g.mask != mask).mean() <= 1e-3, g.text
        if g.presence < 0.5:
            assert g.mask.sum() == 0 and mask.sum() == 0
        else:
            assert g.probability.max() > 0


def test_scene_equals_pytorch(exported2, tmp_path):
    """Sliding windows (6 of 96 px): window presence, averaged probability
    and mask as PyTorch's; the text graph once per expression."""
    model, out, _ = exported2
    data = np.random.default_rng(5).integers(0, 255, (3, 150, 200), np.uint8)
    path = write_tif(tmp_path / 'scene.tif', data, 'EPSG:32633',
                     from_origin(500000, 4100000, 1, 1))
    from test_onnx_text_graph import counted
    ours = counted(OnnxReferringPredictor(out))
    answers = []
    for runtime in (ReferringPredictor(model), ours):
        scene = ScenePredictor(
            runtime, crop_size=96, window_batch=3, progress=False)
        scene.set_scene(path)
        answers.append(
            scene.predict(
                TEXTS[:4],
                out_dir=str(tmp_path / type(runtime).__name__),
                keep_probability=True))
        scene.close()
    assert ours.text_encoder.runs == 4  # once per expression
    assert ours.decoder.runs == 4 * 6  # once per window and expression
    for torch_res, ort_res in zip(*answers):
        np.testing.assert_allclose(
            ort_res.window_presence, torch_res.window_presence, atol=1e-5)
        np.testing.assert_allclose(
            ort_res.probability, torch_res.probability, atol=1e-4)
