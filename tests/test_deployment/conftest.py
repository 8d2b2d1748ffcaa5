"""The tiny CLIP config and a tiny-size paper (SigLIP) config with random
weights, saved as runner checkpoints and exported to ONNX once per session."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from helpers import TINY_CONFIG, load_script
from siglip_helpers import paper_tiny_config


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
