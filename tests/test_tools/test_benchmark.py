"""tools/analysis_tools/benchmark.py and the GPU-run helpers on tiny models."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F

import rsrefseg_mm  # noqa: F401
from helpers import REPO, TINY_CONFIG, TINY_SAM, load_script

TINY_CFG = TINY_CONFIG


def load_tool(name):
    return load_script(f'tools/analysis_tools/{name}.py')


bm = load_tool('benchmark')


def test_flop_counter_counts_cpu_sdpa():
    """torch counts only the CUDA SDPA kernels; ours also counts the CPU
    one, forward and backward (2 * 2 * B * nH * N * N * C forward)."""
    q = torch.randn(1, 2, 64, 32, requires_grad=True)
    mask = torch.randn(1, 2, 64, 64)
    with bm.flop_counter() as fc:
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    forward = 2 * 2 * 2 * 64 * 64 * 32
    assert fc.get_total_flops() == forward
    with bm.flop_counter() as fc:
        out.sum().backward()
    assert fc.get_total_flops() == int(2.5 * forward)


def test_inference_and_stock_comparison(capsys):
    out = bm.main([
        TINY_CFG, '--batch-size', '2', '--repeats', '2', '--warmup', '1',
        '--compare-stock', '--device', 'cpu'
    ])
    inf = out['inference']
    assert set(inf['stages']) == set(bm.STAGES)
    assert all(t > 0 for t in inf['stages'].values())
    assert inf['images_per_s'] == pytest.approx(2 / inf['latency']['median'])
    # stage FLOPs per image == the SAM encoder counted on its own
    cfg = bm.load_config(TINY_CFG)
    model = bm.build_model(cfg, 'cpu')
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad(), bm.flop_counter() as fc:
        model.decode_head.encode_image(x)
    assert inf['flops']['SAM encoder'] == fc.get_total_flops() > 0
    assert all(inf['flops'][s] > 0 for s in bm.STAGES)
    stock = out['stock']
    assert set(stock['medians']) == {'stock', 'stock+sdpa'}
    assert stock['max_abs_diff']['stock+sdpa'] < 1e-4
    assert len(stock['times']['stock']) == 2
    text = capsys.readouterr().out
    assert '| images/s |' in text and '| SAM encoder |' in text
    assert 'speed-up vs stock' in text


def test_merged_lora_weights_give_the_stock_encoder():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from rsrefseg_mm.models.sam.sam_builder import build_sam_modules
    init_default_scope('mmseg')
    torch.manual_seed(0)
    arch = dict(TINY_SAM, image_size=64)
    head = MODELS.build(
        dict(
            type='SAMPromptHead',
            sam_arch=arch,
            encoder_tuning=dict(mode='lora', rank=4, alpha=8,
                                drop_rate=0.))).eval()
    with torch.no_grad():  # LoRA-B starts at zero: make the update count
        for name, p in head.image_encoder.named_parameters():
            if 'lora_up' in name or 'rel_pos' in name:
                p.normal_(std=0.2)
    stock = build_sam_modules(arch)['image_encoder'].eval()
    stock.load_state_dict(bm.merged_sam_state_dict(head.image_encoder))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = head.image_encoder(x), stock(x)
        plain = copy.deepcopy(stock)
        plain.load_state_dict({
            k.replace('.original_layer', ''): v
            for k, v in head.image_encoder.state_dict().items()
            if 'lora_' not in k
        })
        without_lora = plain(x)
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours - without_lora).abs().max() > 1e-2  # LoRA was merged


def test_train_mode_runs_one_subprocess_per_with_cp(capfd):
    """``--progress on`` reaches the workers, whose bars go to stderr."""
    out = bm.main([
        TINY_CFG, '--train', '--batch-size', '1', '--repeats', '2', '--warmup',
        '1', '--device', 'cpu', '--progress', 'on'
    ])['train']
    assert [r['with_cp'] for r in out] == [False, True]
    assert [r['with_cp_model'] for r in out] == [False, True]
    for r in out:
        assert r['memory']['peak'] > 0 and r['step']['median'] > 0
        assert r['flops_per_image'] > 0
    # a backward pass executes more FLOPs than the forward alone
    assert out[0]['flops_per_image'] > 1.5 * out[0]['forward_flops']
    captured = capfd.readouterr()
    text = captured.out
    assert '| SAM encoder with_cp |' in text and 'activation memory' in text
    # warm-up and timed bars (redrawn while live), on stderr only
    assert 'training warm-up' in captured.err
    assert 'training timed' in captured.err
    assert '2/2' in captured.err and 'step/s' in captured.err
    assert 'ETA' in captured.err and 'ETA' not in text


def test_bf16_training_needs_a_gpu(capsys):
    with pytest.raises(SystemExit):
        bm.parse_args([TINY_CFG, '--train', '--amp', '--device', 'cpu'])
    assert 'SkipNonFiniteAmpOptimWrapper' in capsys.readouterr().err
    args = bm.parse_args([TINY_CFG, '--amp', '--device', 'cpu'])
    assert args.amp and not args.train  # bf16 autocast inference on CPU


@pytest.mark.parametrize('progress', ['auto', 'on', 'off'])
def test_progress_bars_with_rate_and_eta(capsys, progress):
    """``auto`` draws on terminals only (pytest's stderr is not one)."""
    bm.main([
        TINY_CFG, '--repeats', '3', '--warmup', '1', '--device', 'cpu',
        '--no-flops', '--compare-stock', '--progress', progress
    ])
    out, err = capsys.readouterr()
    if progress != 'on':  # no bar (mmengine's logger may still write)
        assert '\u2501' not in err and 'ETA' not in err
        assert 'inference timed' not in err
        return
    for bar in ('inference warm-up', 'inference timed',
                'SAM encoder vs stock'):
        assert bar in err
    assert '3/3' in err and 'run/s' in err and 'round/s' in err
    assert 'ETA' in err
    assert 'ETA' not in out and '| images/s |' in out


def test_env_line_names_threads_and_allocator(monkeypatch):
    for key in list(os.environ):
        if key.startswith('MALLOC_') or key == 'LD_PRELOAD':
            monkeypatch.delenv(key)
    assert bm.env_line('cpu').endswith('threads, allocator: default)')
    monkeypatch.setenv('MALLOC_MMAP_MAX_', '0')
    assert 'allocator: MALLOC_MMAP_MAX_=0)' in bm.env_line('cpu')


def test_siglip_config_stage_flops(tmp_path, capsys, siglip_spiece):
    """The paper's SigLIP config (tiny archs) benchmarks; the towers' FLOPs
    per image equal the backbone counted on its own."""
    from siglip_helpers import TINY_SIGLIP
    spiece = siglip_spiece
    paper = next(
        (REPO / 'configs' /
         'rsrefseg').glob('rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_*.py'))
    cfg = tmp_path / 'siglip_tiny.py'
    cfg.write_text(f"""
_base_ = [{str(paper)!r}]
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch=dict(_delete_=True, **{TINY_SIGLIP!r}),
                  tokenizer={spiece!r}),
    neck=dict(in_channels=32, prompt_dims=32, dense_prompt_size=(32, 32)),
    decode_head=dict(sam_arch=dict(_delete_=True, **{TINY_SAM!r})))
""")
    out = bm.main([
        str(cfg), '--batch-size', '2', '--repeats', '1', '--warmup', '1',
        '--device', 'cpu'
    ])
    inf = out['inference']
    assert set(inf['stages']) == set(bm.STAGES)
    model = bm.build_model(bm.load_config(str(cfg)), 'cpu')
    x = torch.rand(2, 3, 128, 128) * 255  # the merged-LoRA weights are
    with torch.no_grad(), bm.flop_counter() as fc:  # built once per batch
        model.backbone(x, ['the white storage tank', 'the ship'])
    assert inf['flops']['encoder towers'] == fc.get_total_flops() / 2 > 0
    assert '| encoder towers |' in capsys.readouterr().out
