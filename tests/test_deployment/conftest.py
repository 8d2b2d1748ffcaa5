"""The tiny CLIP config and a tiny-size paper (SigLIP) config with random
weights, saved as runner checkpoints and exported to ONNX once per session."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from helpers import REPO, TINY_CONFIG, TINY_SAM, load_script
from siglip_helpers import TINY_SIGLIP

PAPER_B = REPO / 'configs' / 'rsrefseg' / (
    'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
    'rrsisd-1024x1024.py')


def paper_tiny_config(path, spiece, arch=TINY_SIGLIP, tokenizer_cfg=None):
    """The paper config at tiny sizes (random weights, LoRA kept); ``arch``
    and ``tokenizer_cfg`` of the SigLIP backbone (SigLIP 2: a Gemma
    arch and ``tokenizer.model``)."""
    path.write_text(f"""
_base_ = [{str(PAPER_B)!r}]
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch=dict(_delete_=True, **{arch!r}),
                  checkpoint=None, tokenizer={spiece!r},
                  tokenizer_cfg={tokenizer_cfg!r}),
    neck=dict(in_channels=32, prompt_dims=32, dense_prompt_size=(32, 32)),
    decode_head=dict(sam_arch=dict(_delete_=True, **{TINY_SAM!r}),
                     checkpoint=None))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadReferringImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs')]))
""")
    return str(path)


@pytest.fixture(scope='session', params=['clip-tiny', 'siglip-paper-tiny'])
def exported(request, tmp_path_factory, siglip_spiece):
    root = tmp_path_factory.mktemp(request.param)
    config = TINY_CONFIG if request.param == 'clip-tiny' else \
        paper_tiny_config(root / 'paper_tiny.py', siglip_spiece)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    with torch.no_grad():  # LoRA updates and norms away from their init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    tool = load_script('tools/deployment/export_onnx.py')
    out = root / 'onnx'
    info = tool.main(
        [config,
         str(ckpt), '--out-dir',
         str(out), '--dynamic-expressions'])
    from rsrefseg_mm.apis import init_referring_model
    return init_referring_model(config, str(ckpt)), str(out), info
