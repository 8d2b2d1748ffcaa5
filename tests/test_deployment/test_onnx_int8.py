"""int8 ONNX export (``export_onnx.py --quantize int8``): integer kernels
in the quantized graphs, deploy.json records what was quantized and what
stayed float, the runtime loads the folder unchanged, and the answers stay
close to the float graphs'."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from rsrefseg_deploy import OnnxReferringPredictor
from rsrefseg_mm.deployment.quantize import quantize_folder
from helpers import TINY_CONFIG, load_script, perturbed_model

TEXTS = ['the red circle', 'the blue square', 'the white cross']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('int8')
    model = perturbed_model(TINY_CONFIG)
    ckpt = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    tool = load_script('tools/deployment/export_onnx.py')
    dirs = {}
    for name, extra in (('fp32', []), ('int8', ['--quantize', 'int8']),
                        ('int8-all', [
                            '--quantize', 'int8', '--quantize-graphs',
                            'image_encoder', 'text_encoder', 'decoder'
                        ])):
        dirs[name] = str(root / name)
        tool.main([
            TINY_CONFIG,
            str(ckpt), '--out-dir', dirs[name], '--dynamic-expressions'
        ] + extra)
    return dirs


def ops(path):
    return {n.op_type for n in onnx.load(path).graph.node}


def test_quantized_graphs_use_integer_kernels(exported):
    out = exported['int8']
    with open(f'{out}/deploy.json') as f:
        deploy = json.load(f)
    assert deploy['image_encoder'] == 'image_encoder.int8.onnx'
    assert deploy['decoder'] == 'decoder.onnx'  # not asked for
    assert sorted(os.listdir(out)) == sorted([
        'deploy.json', 'image_encoder.int8.onnx', 'text_encoder.onnx',
        'decoder.onnx'
    ] + [deploy['tokenizer']['file']])
    assert {'MatMulInteger', 'ConvInteger'
            } <= ops(f'{out}/image_encoder.int8.onnx')
    for name in ('text_encoder', 'decoder'):
        assert 'MatMulInteger' not in ops(f'{out}/{name}.onnx')
    q = deploy['quantization']
    assert q['type'] == 'int8-dynamic' and list(
        q['graphs']) == ['image_encoder']
    enc = q['graphs']['image_encoder']
    assert enc['quantized_of']['Conv'] > 0
    assert enc['quantized_of']['MatMul'] > 0
    # the fused attention keeps its float kernel, and says so
    assert enc['float_ops'].get('MultiHeadAttention', 0) > 0
    with open(f'{exported["int8-all"]}/deploy.json') as f:
        every = json.load(f)
    assert list(every['quantization']['graphs']) == [
        'image_encoder', 'text_encoder', 'decoder'
    ]
    for name in ('image_encoder', 'text_encoder', 'decoder'):
        assert every[name] == f'{name}.int8.onnx'
        assert every['quantization']['graphs'][name]['int8_ops'].get(
            'MatMulInteger', 0) > 0, name
        assert 'MatMulInteger' in ops(f'{exported["int8-all"]}/{every[name]}')
        assert every[name] in every['files']
    with pytest.raises(ValueError, match='already quantized'):
        quantize_folder(out)


def test_int8_answers_close_to_float(exported):
    image = np.random.default_rng(0).integers(0, 255, (96, 120, 3), np.uint8)
    probs = {}
    for name, out in exported.items():
        predictor = OnnxReferringPredictor(out)  # hashes verified
        predictor.set_image(image)
        probs[name] = np.stack(
            [r.probability for r in predictor.predict(TEXTS)])
    for name in ('int8', 'int8-all'):
        diff = np.abs(probs[name] - probs['fp32'])
        # int8 rounding changes the answer a little, not the mask
        assert 0 < diff.max() < 0.02, (name, diff.max())
        assert ((probs[name] > 0.5) == (probs['fp32'] > 0.5)).mean() > 0.99


def test_spinning_off_frees_the_cores(exported):
    option = 'session.intra_op.allow_spinning'
    quiet = OnnxReferringPredictor(exported['int8'], spinning=False)
    for session in (quiet.encoder, quiet.text_encoder, quiet.decoder):
        assert session.get_session_options().get_session_config_entry(
            option) == '0'
    default = OnnxReferringPredictor(exported['int8'])
    options = default.encoder.get_session_options()
    with pytest.raises(RuntimeError):  # not set: ONNX Runtime's default
        options.get_session_config_entry(option)
