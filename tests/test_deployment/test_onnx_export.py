"""tools/deployment/export_onnx.py: three graphs (image encoder, text
encoder, decoder) that onnx.checker accepts and that ONNX Runtime runs with
PyTorch's numbers (tiny CLIP config and a tiny-size paper SigLIP config,
LoRA merged)."""
import json
import os.path as osp

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rsrefseg_core.deploy_info import GRAPHS
from rsrefseg_mm.deployment.onnx_graphs import TEXT_OUTPUTS
from helpers import NETWORK_RTOL, TINY_CONFIG, assert_close_to_reference

TEXTS = [
    'the red circle', 'a blue square at the top left of the image',
    'the green triangle'
]


def run_graph(out, name, arrays):
    """``name``.onnx on the ``arrays`` it takes, outputs by name."""
    session = ort.InferenceSession(osp.join(out, f'{name}.onnx'))
    feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def run_graphs(out, image, tokens):
    """The three graphs: logits and global map."""
    arrays = dict(
        image=image, **dict(zip(('token_ids', 'token_mask'), tokens)))
    for name in GRAPHS:
        arrays.update(run_graph(out, name, arrays))
    return arrays['logits'], arrays['global_map']


def test_deploy_files(exported):
    model, out, info = exported
    for name in GRAPHS:
        onnx.checker.check_model(osp.join(out, f'{name}.onnx'))
    with open(osp.join(out, 'deploy.json')) as f:
        deploy = json.load(f)
    assert deploy['format'] == 'rsrefseg-onnx/2'
    siglip = deploy['tokenizer']['kind'] == 'siglip-sentencepiece'
    text_inputs = ['token_ids', 'token_mask'] if siglip else ['token_ids']
    assert deploy['graphs'] == dict(
        image_encoder=dict(
            inputs=['image'], outputs=['img_feats', 'image_embeddings']),
        text_encoder=dict(inputs=text_inputs, outputs=list(TEXT_OUTPUTS)),
        decoder=dict(
            inputs=['img_feats', 'image_embeddings'] + list(TEXT_OUTPUTS),
            outputs=['logits', 'global_map']))
    assert set(
        deploy['files']) == {f'{g}.onnx'
                             for g in GRAPHS} | {deploy['tokenizer']['file']}
    # the text tower is in its own graph only: no token ids reach the
    # decoder, and its weights are not in it
    sizes = {g: osp.getsize(osp.join(out, f'{g}.onnx')) for g in GRAPHS}
    text_params = sum(p.numel() for n, p in model.backbone.named_parameters()
                      if n.startswith('text'))
    others = sum(p.numel() for p in model.parameters()) - text_params
    assert sizes['text_encoder'] > 0.8 * 4 * text_params
    assert sizes['decoder'] < 4 * others + (64 << 10)
    assert deploy['input_size'] == [128, 128]
    assert osp.isfile(osp.join(out, deploy['tokenizer']['file']))
    assert deploy['threshold'] == model.decode_head.threshold
    assert deploy['opset'] == 20 and deploy['contrib_ops'] == 'com.microsoft'
    encoder = onnx.load(osp.join(out, 'image_encoder.onnx'))
    ops = [n.op_type for n in encoder.graph.node]
    # SAM's blocks: fused attention, no Einsum, no attention matrix
    assert ops.count('MultiHeadAttention') == \
        len(model.decode_head.image_encoder.blocks)
    assert 'Einsum' not in ops
    assert len(deploy['checkpoint_sha256']) == 64
    if siglip:
        assert info['lora_layers_merged'] > 0  # the paper config's LoRA


@pytest.mark.parametrize('num_texts', [1, 3])
def test_onnx_runtime_equals_pytorch(exported, num_texts):
    model, out, _ = exported
    image = (np.random.default_rng(num_texts).random(
        (1, 3, 128, 128)) * 255).astype(np.float32)
    texts = TEXTS[:num_texts]
    tokens = model.backbone.tokenizer(texts)
    tokens = tokens if isinstance(tokens, tuple) else (tokens, )
    logits, global_map = run_graphs(out, image, [t.numpy() for t in tokens])
    with torch.no_grad():
        want, feats = model.decode(
            model.encode_image(torch.from_numpy(image)), texts)
    assert logits.shape == tuple(want.shape)
    assert_close_to_reference(logits, want, what='mask logits')
    # probabilities: on their own scale (1); ONNX Runtime's Sigmoid is
    # accurate to ~1e-7 absolute, not relative (7 % at sigmoid(-14), where
    # SigLIP's bias of -10 puts the global map)
    assert_close_to_reference(
        global_map, feats['global_map'], NETWORK_RTOL, what='global map')
    masks = (logits > 0) != (want.numpy() > 0)
    assert masks.mean() <= 1e-3


def test_text_padding_none_is_refused(exported):
    """SigLIP's ``text_padding='none'`` (each expression at its own
    length) has no text graph: refused by name, not traced wrongly."""
    from rsrefseg_mm.deployment import TextEncoderGraph
    model = exported[0]
    if not hasattr(model.backbone, 'text_padding'):
        pytest.skip('CLIP towers have no text_padding')
    model.backbone.text_padding = 'none'
    try:
        with pytest.raises(NotImplementedError, match="text_padding='none'"):
            TextEncoderGraph(model)
    finally:
        model.backbone.text_padding = 'context'


@pytest.mark.parametrize('contrib_ops', [True, False])
def test_export_with_padded_windows(tmp_path, contrib_ops):
    """A SAM grid of 64 x 64 tokens with 14 x 14 windows (SAM at 1024:
    the fused, padding-free windowed blocks in PyTorch) exports with
    segment-anything's pad-and-partition windows and gives the same
    image embeddings, with ONNX Runtime's fused attention or standard
    operators only."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.decode_head.sam_arch.update(
        image_size=256, patch_size=4, encoder_window_size=14)
    cfg.model.neck.dense_prompt_size = (256, 256)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    from rsrefseg_mm.deployment import export_onnx
    from rsrefseg_mm.models.sam import SAMFastBlock
    x = torch.rand(1, 3, 128, 128) * 255
    assert any(
        m.uses_fused_windows(torch.zeros(1, 64, 64, 8))
        for m in model.modules() if isinstance(m, SAMFastBlock))
    info = export_onnx(model, cfg, str(tmp_path), contrib_ops=contrib_ops)
    assert info['contrib_ops'] == ('com.microsoft' if contrib_ops else None)
    graph = onnx.load(str(tmp_path / 'image_encoder.onnx')).graph
    assert any(n.domain == 'com.microsoft' for n in graph.node) == contrib_ops
    enc = ort.InferenceSession(str(tmp_path / 'image_encoder.onnx'))
    img_feats, emb = enc.run(None, {'image': x.numpy()})
    with torch.no_grad():
        want = model.encode_image(x)
    assert_close_to_reference(emb, want['image_embeddings'], what='SAM')
    assert_close_to_reference(img_feats, want['img_feats'], what='CLIP')


def test_export_clip_antialiased_resize(tmp_path):
    """CLIP's tower resizes the input with anti-aliased bicubic (128 -> 64
    here, 1024 -> 224 in the CLIP configs): exported as ONNX Resize with
    antialias, the same features."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from rsrefseg_mm.deployment import export_onnx
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.backbone.arch.image_size = 64
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    assert model.backbone.resize_antialias
    info = export_onnx(model, cfg, str(tmp_path))
    assert info['opset'] >= 18
    x = torch.rand(1, 3, 128, 128) * 255
    enc = ort.InferenceSession(str(tmp_path / 'image_encoder.onnx'))
    img_feats, _ = enc.run(None, {'image': x.numpy()})
    with torch.no_grad():
        want = model.encode_image(x)['img_feats'].numpy()
    assert img_feats.shape == want.shape == (1, 64, 4, 4)
    assert_close_to_reference(img_feats, want)
