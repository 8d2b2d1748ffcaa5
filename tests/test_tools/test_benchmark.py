"""tools/analysis_tools/benchmark.py: every mode on the tiny config prints
the table it promises, with finite positive figures."""
import math
import re

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from helpers import REPO, TINY_CONFIG, load_script

bm = load_script('tools/analysis_tools/benchmark.py')


def tables(text: str) -> dict:
    """The Markdown tables of ``text``, keyed by their first header cell:
    ``{'header': [...], 'rows': {first cell: [other cells]}}``."""
    found = {}
    for block in re.findall(r'(?:^\|.*\|\n)+', text, re.M):
        lines = [[c.strip() for c in ln.strip('|').split('|')]
                 for ln in block.strip().splitlines()]
        assert set(''.join(lines[1])) == set('-'), block
        found[lines[0][0]] = dict(
            header=lines[0], rows={r[0]: r[1:]
                                   for r in lines[2:]})
    return found


def number(cell: str) -> float:
    return float(cell.replace(',', ''))


def assert_positive(cells, allow_zero=False):
    for cell in cells:
        value = number(cell)
        assert math.isfinite(value), cell
        assert value >= 0 if allow_zero else value > 0, cell


def assert_context(text: str, device='cpu'):
    """The line under the title names torch, the hardware and threads."""
    line = text.split('### ', 1)[1].splitlines()[2]
    assert line.startswith(f'torch {torch.__version__}, '), line
    assert ('CPU ' if device == 'cpu' else 'GPU ') in line, line
    assert f', threads: {torch.get_num_threads()}, ' in line, line


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


def test_throughput_inference(capsys):
    res = bm.main([
        'throughput', TINY_CONFIG, '--batch-size', '2', '--repeats', '2',
        '--device', 'cpu'
    ])
    text = capsys.readouterr().out
    assert_context(text)
    assert '128x128, batch 2, fp32; 2 timed repeats after 1 warm-up' in text
    found = tables(text)
    rows = found['measurement']['rows']
    assert list(rows) == [
        'images/s', 'latency, median (s/batch)', 'latency, p90 (s/batch)',
        'peak memory (max RSS, MiB)',
        'peak memory over the loaded model (MiB)', 'GFLOPs/image',
        'TFLOP/s achieved'
    ]
    for name, cells in rows.items():
        assert_positive(cells, allow_zero='over the loaded' in name)
    figures = res['rows']
    assert figures['images/s'] == pytest.approx(
        2 / figures['latency, median (s/batch)'])
    stages = found['stage']
    assert stages['header'] == [
        'stage', 'median s/batch', 'share (%)', 'GFLOPs/image'
    ]
    assert list(stages['rows']) == list(bm.STAGES)
    for cells in stages['rows'].values():
        assert_positive(cells)
    # the stage FLOPs add up, and the SAM encoder's are its own count
    assert sum(res['stage_flops'].values()) == pytest.approx(
        figures['GFLOPs/image'] * 1e9)
    model = bm.build_model(bm.load_config(TINY_CONFIG))
    with torch.no_grad(), bm.flop_counter() as fc:
        model.decode_head.encode_image(torch.rand(1, 3, 128, 128) * 255)
    assert res['stage_flops']['SAM image encoder'] == fc.get_total_flops()


def test_throughput_of_rsrefseg2(capsys):
    """The cascaded prompter's parameter views and SAM 2.1's Hiera under
    the FLOP counter: every stage counted."""
    config = str(REPO / 'configs' / 'rsrefseg2' /
                 ('rsrefseg2-tiny_clip-tiny-sam-tiny_1xb16-adamw-1200it_'
                  'synthetic-128x128.py'))
    res = bm.main(['throughput', config, '--repeats', '1', '--device', 'cpu'])
    capsys.readouterr()
    assert all(v > 0 for v in res['stage_flops'].values())
    assert sum(res['stage_flops'].values()) == pytest.approx(
        res['rows']['GFLOPs/image'] * 1e9)


def test_throughput_training_steps(capsys):
    inference = bm.main(
        ['throughput', TINY_CONFIG, '--repeats', '1', '--device', 'cpu'])
    res = bm.main([
        'throughput', TINY_CONFIG, '--train', '--repeats', '2', '--device',
        'cpu'
    ])
    text = capsys.readouterr().out
    assert '### Throughput, training step:' in text
    rows = tables(text.split('training step')[1])['measurement']['rows']
    assert 'latency, median (s/step)' in rows
    for name, cells in rows.items():
        assert_positive(cells, allow_zero='over the loaded' in name)
    # a backward pass executes more FLOPs than the forward alone
    assert res['rows']['GFLOPs/image (forward + backward)'] > \
        1.5 * inference['rows']['GFLOPs/image']
    model = bm.build_model(bm.load_config(TINY_CONFIG))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert res['rows']['trainable parameters (M)'] == trainable / 1e6


def test_bf16_training_needs_cuda(capsys):
    with pytest.raises(SystemExit):
        bm.parse_args([
            'throughput', TINY_CONFIG, '--train', '--bf16', '--device', 'cpu'
        ])
    assert 'needs --device cuda' in capsys.readouterr().err
    args = bm.parse_args(
        ['throughput', TINY_CONFIG, '--bf16', '--device', 'cpu'])
    assert args.bf16 and not args.train  # bf16 autocast inference on CPU
    with pytest.raises(SystemExit):
        bm.parse_args(['throughput', TINY_CONFIG, '--repeats', '0'])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bm.parse_args(['encode-once', TINY_CONFIG, '--device', 'cuda'])
        assert 'CUDA is not available' in capsys.readouterr().err


def test_encode_once(capsys, monkeypatch):
    from rsrefseg_mm.models.segmentors import RSRefSeg
    calls = []
    encode = RSRefSeg.encode_image

    def counting_encode(self, *args, **kwargs):
        calls.append(kwargs.get('with_sam', True))
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(RSRefSeg, 'encode_image', counting_encode)
    res = bm.main([
        'encode-once', TINY_CONFIG, '--expressions', '3', '--repeats', '2',
        '--warmup', '0', '--device', 'cpu'
    ])
    # the cached predictor's first encode, then per round: the first query
    # and the 3 expressions encode once each through the predictor (the
    # follow-up and the cached image not at all), the 3 one-pass forwards
    # once each (SAM inside the head)
    assert calls.count(True) == 1 + 2 * 2
    assert calls.count(False) == 2 * 3
    assert all(r['n'] == 2 for r in res.values())
    text = capsys.readouterr().out
    assert_context(text)
    found = tables(text)
    assert list(found['measurement']['rows']) == [
        'first query (set_image + 1 expression)',
        'follow-up query (1 expression, image encoded)',
        'image from the cache (set_image + 1 expression)',
        '3 expressions, predictor (1 encode)',
        '3 expressions, 3 one-pass forwards'
    ]
    assert found['measurement']['header'] == [
        'measurement', 'median s', 'p90 s'
    ]
    for cells in found['measurement']['rows'].values():
        assert_positive(cells)
    assert list(found['ratio']['rows']) == [
        'follow-up / first', '3 forwards / predictor'
    ]
    for cells in found['ratio']['rows'].values():
        assert_positive(cells)


def test_onnx_runtime_against_pytorch(tmp_path, capsys):
    model_dir = str(tmp_path / 'onnx')
    args = [
        'onnx', TINY_CONFIG, '--model-dir', model_dir, '--repeats', '2',
        '--warmup', '0'
    ]
    res = bm.main(args)
    text = capsys.readouterr().out
    assert_context(text)
    assert 'onnxruntime ' in text and f'exported to {model_dir}' in text
    found = tables(text)
    assert found['query']['header'] == [
        'query', 'PyTorch median s', 'ONNX Runtime median s',
        'ONNX Runtime / PyTorch'
    ]
    assert list(found['query']['rows']) == [
        'first query (set_image + 1 expression)',
        'follow-up query (1 expression)'
    ]
    for cells in found['query']['rows'].values():
        assert_positive(cells)
    agreement = found['agreement']['rows']
    assert list(agreement) == [
        'largest probability difference', 'mask pixels that differ (%)'
    ]
    assert_positive(sum(agreement.values(), []), allow_zero=True)
    assert res['prob_diff'] <= 1e-3 and res['mask_diff'] <= 1e-3
    assert all(t['n'] == 2 for t in res['times'].values())
    # the export is reused, and refused for another config
    bm.main(args)
    assert 'exported to' not in capsys.readouterr().out
    other = tmp_path / 'other.py'
    other.write_text(f'_base_ = [{TINY_CONFIG!r}]\n')
    with pytest.raises(ValueError, match='another config'):
        bm.main(['onnx', str(other), '--model-dir', model_dir])


def test_scene_is_written_block_by_block(tmp_path):
    path = str(tmp_path / 'scene.tif')
    bm.write_scene(path, 1300, overviews=True)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (1300, 1300, 4)
        assert src.dtypes[0] == 'uint16' and src.nodata == 0
        assert src.profile['compress'] == 'deflate' and src.is_tiled
        assert src.overviews(1) == [4]  # down to >= 256 px
        data = src.read(window=((0, 600), (0, 1300)))
    margin = int(1300 * bm.MARGIN)
    assert (data[:, :, :margin] == 0).all()
    assert (data[:, :, margin:] > 0).all()
    # rows past the first written block hold the parcels too
    assert len(np.unique(data[0, 300:, margin:])) > 3


def test_scene_memory_two_sizes_side_by_side(tmp_path, capsys):
    bm.main([
        'scene-memory', TINY_CONFIG, '--sizes', '1024', '2048', '--repeats',
        '1', '--work-dir',
        str(tmp_path)
    ])
    text = capsys.readouterr().out
    assert_context(text)
    table = tables(text)['measurement']
    assert table['header'] == ['measurement', '1,024 x 1,024', '2,048 x 2,048']
    rows = table['rows']
    # decimated reads: 2 x the tiny model's input, whatever the scene
    assert rows.pop('image read (px)') == ['256 x 256'] * 2
    assert rows.pop('runs') == ['1', '1']
    assert list(rows) == [
        'file (MB)', 'read + encode (s)', 'to the saved outputs (s)',
        'process wall time (s)', 'RSS, model loaded (MiB)', 'peak RSS (MiB)'
    ]
    for cells in rows.values():
        assert_positive(cells)
    peak, loaded = rows['peak RSS (MiB)'], rows['RSS, model loaded (MiB)']
    assert all(number(p) >= number(m) for p, m in zip(peak, loaded))
    assert list(tmp_path.iterdir()) == []  # scenes and outputs deleted


def test_scene_memory_stops_a_run_past_the_limit(tmp_path, capsys):
    res = bm.main([
        'scene-memory', TINY_CONFIG, '--sizes', '512', '--repeats', '2',
        '--rss-limit-gb', '0.01', '--work-dir',
        str(tmp_path)
    ])
    assert [r['killed'] for r in res[512]['runs']] == [True]
    rows = tables(capsys.readouterr().out)['measurement']['rows']
    assert rows['runs'][0].startswith('stopped at ')
    assert rows['peak RSS (MiB)'] == ['-']


def test_precision_modes_side_by_side(tmp_path, capsys):
    fp32, int8 = str(tmp_path / 'fp32'), str(tmp_path / 'int8')
    res = bm.main([
        'precision', TINY_CONFIG, '--model-dir', fp32, '--int8-dir', int8,
        '--repeats', '1', '--warmup', '0', '--quality-samples', '3'
    ])
    text = capsys.readouterr().out
    assert_context(text)
    assert f'exported to {int8} (int8)' in text
    found = tables(text)
    rows = found['runtime']['rows']
    native = any(bm_precision().cpu_bf16_support().values())
    expected = ['PyTorch fp32'] + (['PyTorch bf16'] if native else []) + \
        ['ORT fp32', 'ORT int8']
    assert list(rows) == expected
    for name in expected:
        assert_positive(rows[name][:4])
    # each fp32 row is its own reference; the others differ a little
    assert float(rows['ORT fp32'][4]) == 0.0
    assert 0.0 < float(rows['ORT int8'][4]) < 5.0
    if native:
        assert 'brg_matmul' in text or 'gemm' in text
    else:
        assert "precision='bf16' needs a CPU with native bf16" in text
    assert list(found['runtime on the test split']['rows']) == expected
    assert set(res['quality']) == set(expected)
    with open(f'{int8}/deploy.json') as f:
        assert '"int8-dynamic"' in f.read()
    # reused, unless it is not the export asked for
    bm.main([
        'precision', TINY_CONFIG, '--model-dir', fp32, '--int8-dir', int8,
        '--repeats', '1', '--warmup', '0'
    ])
    assert 'exported to' not in capsys.readouterr().out
    with pytest.raises(ValueError, match='quantized graphs'):
        bm.main([
            'precision', TINY_CONFIG, '--model-dir', int8, '--int8-dir', int8,
            '--repeats', '1', '--warmup', '0'
        ])


def bm_precision():
    from rsrefseg_mm.apis import precision
    return precision
