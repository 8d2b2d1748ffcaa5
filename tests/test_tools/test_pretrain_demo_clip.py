"""tools/misc/pretrain_demo_clip.py: the `make demo` towers' pretraining
stage writes a CLIP weight file that the demo config's backbone loads."""
import torch
from mmengine.config import Config

from rsrefseg_mm.models.backbones import CLIPBackbone
from rsrefseg_mm.models.backbones.clip.clip_checkpoint import load_clip_file
from helpers import GRES_CONFIG, load_script

pretrain = load_script('tools/misc/pretrain_demo_clip.py')


def test_captions_cover_colour_shape_and_single_words():
    caps = pretrain.captions()
    texts = [c[0] for c in caps]
    assert len(texts) == len(set(texts)) == 6 * 4 + 6 + 4
    assert ('the red circle', 'red', 'circle') in caps
    assert ('the white object', 'white', None) in caps
    assert ('the cross', None, 'cross') in caps


def test_writes_openai_layout_that_the_demo_backbone_loads(tmp_path, capsys):
    out = tmp_path / 'clip.pth'
    result = pretrain.pretrain(
        pretrain.parse_args([
            GRES_CONFIG,
            str(out), '--iters', '2', '--batch-size', '4', '--num-scenes', '6',
            '--eval-scenes', '2', '--dense-weight', '1'
        ]))
    assert set(result) == {'shape', 'colour', 'both'}
    assert 'zero-shot on 2 held-out scenes' in capsys.readouterr().out
    raw = load_clip_file(str(out))
    # OpenAI's keys: text tower at the top level, packed attention names
    assert 'token_embedding.weight' in raw and 'logit_scale' in raw
    assert 'transformer.resblocks.0.attn.in_proj_weight' in raw
    assert 'visual.transformer.resblocks.0.attn.out_proj.weight' in raw
    assert not any(k.startswith('text.') for k in raw)
    assert raw['visual.stem.1.num_batches_tracked'].dtype == torch.long
    cfg = Config.fromfile(GRES_CONFIG).model.backbone
    cfg.pop('type')
    # strict: every tensor of the arch, nothing else
    loaded = CLIPBackbone(**dict(cfg, checkpoint=str(out)))
    torch.testing.assert_close(loaded.text.token_embedding.weight,
                               raw['token_embedding.weight'])
    torch.testing.assert_close(loaded.visual.stem[0].weight,
                               raw['visual.stem.0.weight'])
