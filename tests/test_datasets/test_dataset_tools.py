"""tools/dataset_converters/{synthetic_to_rrsisd,rrsisd}.py and
tools/analysis_tools/browse_dataset.py on small data."""
import json
import pickle

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import rsrefseg_mm  # noqa: F401
from rsrefseg_mm.datasets import SyntheticReferringDataset
from helpers import REPO
from helpers import load_script as load_tool
from helpers import recanvas_image

PIPELINE = [
    dict(type='LoadReferringImageFromFile'),
    dict(type='LoadReferringAnnotations'),
    dict(type='PackReferringInputs'),
]


@pytest.fixture(scope='module')
def synthetic_on_disk(tmp_path_factory):
    out = tmp_path_factory.mktemp('synrrsisd')
    tool = load_tool('tools/dataset_converters/synthetic_to_rrsisd.py')
    assert tool.main([
        str(out), '--num-train', '6', '--num-val', '3', '--num-test', '4',
        '--img-size', '64'
    ]) == 0
    return out


def test_writer_expression_types_match_the_dataset(tmp_path):
    """demo.sh writes its image-demo scene with the tiny config's
    expression types (attribute only): the same texts as in memory."""
    tool = load_tool('tools/dataset_converters/synthetic_to_rrsisd.py')
    assert tool.main([
        str(tmp_path), '--num-train', '0', '--num-val', '0', '--num-test',
        '12', '--num-objects', '3', '4', '--expression-types', 'attribute'
    ]) == 0
    refs = pickle.load(open(tmp_path / 'refs(unc).p', 'rb'))
    texts = [r['sentences'][0]['sent'] for r in refs]
    mem = SyntheticReferringDataset(
        split='test',
        num_samples=12,
        num_objects=(3, 4),
        expression_types=('attribute', ))
    assert texts == [mem.get_data_info(i)['text'] for i in range(12)]
    words = {w for t in texts for w in t.split()}
    assert not words & {
        'leftmost', 'rightmost', 'topmost', 'bottommost', 'largest', 'smallest'
    }
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), '--expression-types', 'colour'])


def test_writer_round_trips_through_rrsisd_dataset(synthetic_on_disk):
    inst = json.load(open(synthetic_on_disk / 'instances.json'))
    assert all('categories_id' in a for a in inst['annotations'])
    assert all(
        isinstance(a['segmentation'][0]['counts'], str)
        for a in inst['annotations'])
    init_default_scope('mmseg')
    for split, n in (('train', 6), ('val', 3), ('test', 4)):
        mem = SyntheticReferringDataset(
            split=split, num_samples=n, img_size=64)
        disk = DATASETS.build(
            dict(
                type='RRSISDDataset',
                data_root=str(synthetic_on_disk),
                split=split,
                pipeline=PIPELINE))
        assert len(disk) == n
        for i in range(n):
            out = disk[i]
            info = mem.get_data_info(i)
            meta = out['data_samples'].metainfo
            assert meta['text'] == info['text']
            assert meta['category'] == info['category']
            # masks are lossless (RLE) ...
            np.testing.assert_array_equal(
                out['data_samples'].gt_sem_seg.data[0].numpy(),
                info['gt_seg_map'])
            # ... images went through JPEG (pixel noise is lost, the
            # content is not): compare smoothed images and target colours
            img = out['inputs'].permute(1, 2, 0).numpy().astype(np.uint8)

            def smooth(x):
                return cv2.GaussianBlur(x, (5, 5), 0).astype(float)

            assert np.abs(smooth(img) - smooth(info['img'])).mean() < 4
            # object interior (JPEG chroma subsampling smears the edges)
            fg = cv2.erode(info['gt_seg_map'], np.ones((5, 5), np.uint8))
            fg = fg.astype(bool)
            if fg.any():
                np.testing.assert_allclose(
                    img[fg].mean(0), info['img'][fg].mean(0), atol=10)


def test_checker_passes_and_writes_jsonl(synthetic_on_disk, tmp_path, capsys):
    tool = load_tool('tools/dataset_converters/rrsisd.py')
    # real RRSIS-D counts are expected by default: a subset fails
    assert tool.main([str(synthetic_on_disk)]) == 1
    assert 'count mismatch' in capsys.readouterr().out
    rc = tool.main([
        str(synthetic_on_disk), '--skip-count-check', '--out-jsonl',
        str(tmp_path)
    ])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'train: 6' in out.replace('  ', ' ').replace('train : ', 'train: ')
    init_default_scope('mmseg')
    for split in ('train', 'test'):
        jsonl = tmp_path / f'rrsisd_{split}.jsonl'
        a = DATASETS.build(
            dict(
                type='RRSISDDataset',
                data_root=str(synthetic_on_disk),
                split=split,
                pipeline=PIPELINE))
        b = DATASETS.build(
            dict(
                type='RRSISDDataset',
                data_root=str(synthetic_on_disk),
                ann_file=str(jsonl),
                split=split,
                pipeline=PIPELINE))
        assert len(a) == len(b)
        for i in range(len(a)):
            ma = a[i]['data_samples'].metainfo
            mb = b[i]['data_samples'].metainfo
            for k in ('text', 'ref_id', 'sent_id', 'ann_id', 'image_id',
                      'category', 'img_path'):
                assert ma[k] == mb[k], k


def test_checker_reports_missing_and_broken(synthetic_on_disk, tmp_path,
                                            capsys):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(synthetic_on_disk, root)
    imgs = root / 'images/rrsisd/JPEGImages'
    (imgs / '00001.jpg').unlink()
    (imgs / '00002.jpg').write_bytes(b'junk')
    refs = pickle.load(open(root / 'refs(unc).p', 'rb'))
    refs[3]['ann_id'] = 999
    pickle.dump(refs, open(root / 'refs(unc).p', 'wb'))
    tool = load_tool('tools/dataset_converters/rrsisd.py')
    assert tool.main([str(root), '--skip-count-check']) == 1
    out = capsys.readouterr().out
    assert '[missing image]' in out and '00001.jpg' in out
    assert '[corrupt image]' in out and '00002.jpg' in out
    assert '[missing annotation]' in out and 'ann_id=999' in out
    assert 'RMSIN' in out  # download hint
    # a missing annotation file is named too
    (root / 'instances.json').unlink()
    assert tool.main([str(root)]) == 1
    assert 'instances.json' in capsys.readouterr().out


@pytest.mark.parametrize('decode', [True, False])
def test_checker_rrsisd_as_downloaded(downloaded_fixture, capsys, decode):
    """Missing images: listed with counts per split, fail unless accepted;
    images a few pixels off their mask: listed with counts per split, pass
    (decoded, or from the image header and the RLE size)."""
    tool = load_tool('tools/dataset_converters/rrsisd.py')
    args = [str(downloaded_fixture['root']), '--skip-count-check']
    if not decode:
        args.append('--skip-decode')
    assert tool.main(args) == 1
    out = capsys.readouterr().out
    assert ('missing images: 1 (val: 1 image(s) / 1 expression(s)); '
            'RRSISDDataset refuses them') in out
    assert '[missing image] 1 problem(s):' in out
    assert f"{downloaded_fixture['missing']} (val)" in out
    assert ('images 1-13 px off their mask: 3 (train: 2 image(s) / '
            '3 expression(s), test: 1 image(s) / 3 expression(s))') in out
    assert '[aligned size] 3 accepted:' in out
    assert 'ref_id=902: image' in out and '00102.jpg is 37x44, its mask ' \
        '50x44' in out
    assert 'check FAILED' in out
    assert tool.main(args + ['--allow-missing-images']) == 0
    out = capsys.readouterr().out
    assert 'missing images: 1 (val: 1 image(s) / 1 expression(s)); ' \
        'accepted (--allow-missing-images)' in out
    assert '[missing image] 1 accepted:' in out
    assert 'RRSIS-D check passed.' in out
    # no tolerance: the three images fail
    assert tool.main(args +
                     ['--allow-missing-images', '--size-tolerance', '0']) == 1
    out = capsys.readouterr().out
    assert '[size mismatch] 3 problem(s):' in out
    assert 'more than --size-tolerance=0 px' in out


def test_checker_image_too_far_off(downloaded_copy, capsys):
    root = downloaded_copy['root']
    recanvas_image(root / 'images/rrsisd/JPEGImages/00101.jpg', (36, 53))
    tool = load_tool('tools/dataset_converters/rrsisd.py')
    assert tool.main(
        [str(root), '--skip-count-check', '--allow-missing-images']) == 1
    out = capsys.readouterr().out
    assert '[size mismatch] 1 problem(s):' in out
    assert 'ref_id=901: image' in out and '00101.jpg is 36x53, its mask ' \
        '36x36 (h x w), more than --size-tolerance=16 px' in out


def test_browse_dataset(tmp_path):
    tool = load_tool('tools/analysis_tools/browse_dataset.py')
    cfg = REPO / 'configs/_base_/datasets/synthetic_referring.py'
    rc = tool.main([
        str(cfg), '--output-dir',
        str(tmp_path), '--split', 'val', '--num', '3', '--cfg-options',
        'val_dataloader.dataset.num_samples=3'
    ])
    assert rc == 0
    files = sorted(tmp_path.glob('val_*_ref*_sent*.jpg'))
    assert len(files) == 3
    img = cv2.imread(str(files[0]))
    # 128 px scenes are enlarged 2x for readability; caption banner above
    assert img.shape[1] == 256 and img.shape[0] > 256
    # caption banner is white with dark text, the image below is not
    banner = img[:img.shape[0] - 256]
    assert banner.mean() > 200 and banner.min() < 100


def test_checker_keeps_the_first_problems_of_each_kind(refer_copy, capsys):
    """Every problem is counted; only --show of each kind are kept (a file
    of a million bad refs does not become a million messages)."""
    path = refer_copy['root'] / 'refs(unc).p'
    refs = pickle.load(open(path, 'rb'))
    refs += [
        dict(r, ref_id=5000 + i, file_name=f'../{i}.jpg')
        for i, r in enumerate(refs * 5)
    ]
    pickle.dump(refs, open(path, 'wb'))
    tool = load_tool('tools/dataset_converters/rrsisd.py')
    assert tool.main(
        [str(refer_copy['root']), '--skip-count-check', '--show', '2']) == 1
    out = capsys.readouterr().out
    assert '[bad image path] 30 problem(s):' in out
    assert "ref_id=5000: the image file name '../0.jpg'" in out
    assert "ref_id=5001: the image file name '../1.jpg'" in out
    assert 'ref_id=5002:' not in out
    assert '... and 28 more' in out
