"""gpu_benchmark.py: the CPU dry run (--smoke) of every step, the
authors' path builders and the batch-size search."""
from types import SimpleNamespace

import pytest

from helpers import REPO, load_script


def load_tool(name):
    return load_script(f'tools/analysis_tools/{name}.py')


def test_largest_batch_search():
    gb = load_tool('gpu_benchmark')
    largest_batch = gb.gpu_runs.largest_batch
    for cap in (1, 3, 8, 13, 100, 511, 512, 1000):
        tried = []

        def fits(b, cap=cap):
            tried.append(b)
            return b <= cap

        found = largest_batch(fits, start=8, limit=512, granularity=1)
        assert found == min(cap, 512), cap
        assert len(tried) <= 20
    assert largest_batch(lambda b: False, start=8) == 0
    # coarse granularity stays within it of the true answer
    assert 96 <= largest_batch(lambda b: b <= 100, granularity=4) <= 100


def test_authors_models_mirror_the_config_sizes():
    from mmengine.config import Config  # noqa: F401
    gb = load_tool('gpu_benchmark')
    ap = load_tool('authors_path')
    cfg = gb.bu.load_config(
        str(REPO / 'configs' / 'rsrefseg' / 'rsrefseg-b_clip-vit-b16-sam-'
            'vit-b_8xb4-lora-200e_rrsisd-1024x1024.py'))
    model = gb.bu.build_model(cfg, 'cpu')
    sam = ap.sam_vision_config(model)
    assert (sam.hidden_size, sam.num_hidden_layers, sam.num_attention_heads,
            sam.window_size, sam.image_size, sam.patch_size,
            sam.output_channels, sam.mlp_dim) == (768, 12, 12, 14, 1024, 16,
                                                  256, 3072)
    assert list(sam.global_attn_indexes) == [2, 5, 8, 11]
    sig = ap.siglip_config(model, 'config')
    v, t = sig.vision_config, sig.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads,
            v.image_size, v.patch_size) == (768, 12, 12, 224, 16)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads,
            t.max_position_embeddings, t.vocab_size) == (512, 12, 8, 77, 49408)
    so400m = ap.siglip_config(model, 'so400m-384').vision_config
    assert (so400m.hidden_size, so400m.image_size) == (1152, 384)
    with pytest.raises(ValueError, match='siglip must be one of'):
        ap.siglip_config(model, 'giant')
    # the paper's SigLIP backbone maps onto the authors' so400m@384 itself
    from rsrefseg_mm.models.backbones import SigLIPBackbone
    paper = SimpleNamespace(
        backbone=SimpleNamespace(
            arch_settings=SigLIPBackbone.arch_zoo['so400m-patch14-384']))
    mapped = ap.siglip_config(paper, 'config')
    preset = ap.siglip_config(paper, 'so400m-384')
    for part in ('vision_config', 'text_config'):
        a, b = getattr(mapped, part), getattr(preset, part)
        for key in ('hidden_size', 'intermediate_size', 'num_hidden_layers',
                    'num_attention_heads'):
            assert getattr(a, key) == getattr(b, key), (part, key)
    assert (mapped.vision_config.image_size, mapped.vision_config.patch_size,
            mapped.text_config.max_position_embeddings,
            mapped.text_config.vocab_size) == (384, 14, 64, 32000)
    with pytest.raises(ValueError, match='has no arch_settings'):
        ap.siglip_config(SimpleNamespace(backbone=object()), 'config')


def test_smoke_run_prints_every_table(tmp_path, capsys):
    gb = load_tool('gpu_benchmark')
    res = gb.main(
        ['--smoke', '--compile', '--skip-stock', '--out',
         str(tmp_path)])
    assert res['env'].startswith('torch') and 'cpu' in res['env']
    assert set(res['eager']) == {'auto', 'mask'}
    for run in res['eager'].values():
        assert run['inference']['2']['images_per_s'] > 0
        assert set(run['train']) == {'False'}
    assert res['authors']['images_per_s'] > 0
    assert 'SamVisionSdpaAttention' in res['authors']['attention']
    assert res['compiled']['targets'] == [
        'backbone.visual', 'backbone.text', 'decode_head._encode'
    ]
    assert res['compiled']['train']['images_per_s'] > 0
    text = capsys.readouterr().out
    assert 'ours / theirs, inference, eager:' in text
    assert 'ours / theirs, inference, compiled:' in text
    assert '| LoRA train, eager, rel_pos_mode=mask, with_cp=False | 2 |' \
        in text
    assert '972 G counted' in text
    assert 'bf16 autocast inference, fp32 training' in text  # CPU
    assert res['nominal_infer_flops'] is None  # tiny config: counted only
    assert (tmp_path / 'gpu_benchmark.md').read_text().strip() in text
    with pytest.raises(SystemExit, match='needs a CUDA device'):
        gb.main(
            ['--smoke', '--find-max-batch', 'train', '--out',
             str(tmp_path)])
