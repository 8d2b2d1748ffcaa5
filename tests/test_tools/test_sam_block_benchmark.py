""".dev_scripts/sam_block_benchmark.py on small blocks (CPU)."""
from helpers import load_script


def load_tool():
    return load_script('.dev_scripts/sam_block_benchmark.py')


def test_seq_axes():
    sb = load_tool()
    assert sb.seq_axes((25, 12, 196, 196), 196) == 2
    assert sb.seq_axes((25, 12, 196, 14, 14), 196) == 2  # rel-pos mask
    assert sb.seq_axes((25, 196, 2304), 196) == 1  # windowed tokens
    assert sb.seq_axes((25, 14, 14, 768), 196) == 1
    assert sb.seq_axes((1, 64, 64, 768), 4096) == 1


def test_block_benchmark_counts_copies_and_attention_matrices(capsys):
    """Small windowed block with padding (24 x 24 grid, window 7): the
    fused path writes fewer copy bytes than stock's partition path; stock
    attention materialises (N, N) tensors, the folded SDPA path none."""
    sb = load_tool()
    common = [
        '--dim', '32', '--heads', '2', '--grid', '32', '--window', '7',
        '--repeats', '1', '--warmup', '0', '--blocks', 'windowed'
    ]
    res = sb.main(common + ['--rel-pos-mode', 'augmented'])
    fwd, train = res['windowed fwd'], res['windowed fwd+bwd']
    assert set(fwd) == set(sb.VARIANTS)
    for row in (fwd, train):
        assert row['stock']['big_ops']
        for name in ('sdpa-stock-windows', 'sdpa-padded-qkv', 'sdpa-real-qkv'):
            assert row[name]['big_ops'] == [], name
            assert row[name]['median_s'] > 0
    # one-pass partition of the tokens + in-place unpartition: fewer bytes
    assert fwd['sdpa-padded-qkv']['copy_bytes'] < \
        fwd['sdpa-stock-windows']['copy_bytes']
    assert train['sdpa-padded-qkv']['copy_bytes'] < \
        train['sdpa-stock-windows']['copy_bytes']
    assert fwd['sdpa-real-qkv']['copy_bytes'] < \
        fwd['sdpa-stock-windows']['copy_bytes']
    assert '| windowed fwd | sdpa-real-qkv |' in capsys.readouterr().out
