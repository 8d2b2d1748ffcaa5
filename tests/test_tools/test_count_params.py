"""tools/analysis_tools/count_params.py: counts on the meta device equal
those of the model built for real."""
import pytest

from helpers import REPO, TINY_CONFIG, load_script

count_params = load_script('tools/analysis_tools/count_params.py')
PAPER_B = str(REPO / 'configs' / 'rsrefseg' /
              'rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_'
              'rrsisd-1024x1024.py')


def test_meta_counts_equal_a_real_build(capsys):
    bm = load_script('tools/analysis_tools/benchmark.py')
    model = bm.build_model(bm.load_config(TINY_CONFIG), 'cpu')
    real = count_params.count_parameters(model)
    assert real['total'] == sum(p.numel() for p in model.parameters())
    assert real['total'] == real['backbone'] + real['neck'] + \
        real['decode_head']
    assert 0 < real['trainable'] <= real['total']
    rows = count_params.main([TINY_CONFIG])
    assert rows == [dict(config=TINY_CONFIG.split('/')[-1], **real)]
    out = capsys.readouterr().out
    assert f'| {rows[0]["config"]} | {real["total"] / 1e6:.2f} |' in out


def test_siglip_config_needs_a_tokenizer(siglip_spiece):
    with pytest.raises(ValueError, match='--siglip-tokenizer'):
        count_params.build_on_meta(PAPER_B)
    model = count_params.build_on_meta(PAPER_B, siglip_spiece)
    assert all(p.is_meta for p in model.parameters())
    counts = count_params.count_parameters(model)
    # the SigLIP towers outweigh SAM ViT-B; LoRA keeps training small
    assert counts['backbone'] > 5 * counts['decode_head']
    assert counts['trainable'] < 0.05 * counts['total']
