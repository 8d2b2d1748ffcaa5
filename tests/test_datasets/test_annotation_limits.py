"""Adversarial annotation files: each is refused by name, by the dataset and
by the RRSIS-D checker, without allocating what it asks for.

The attacks are a few hundred bytes to a few MB: RLEs and polygons of a
40,000 x 40,000 mask (1.6 GB decoded), a vertex at 1e8 (gigabytes of
boundary points in pycocotools), RLE runs that overrun their mask, JSON
nested 200,000 deep, values of the wrong type, image paths outside the
image folder, a pickle whose shared references stand for 100,000
sentences. Each runs in a subprocess whose address space is capped at
what it holds after the imports + 1 GiB (``RLIMIT_AS``), and the peak
resident memory it adds over that baseline (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``) is asserted small.
"""
import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import REPO

#: Most memory (MB) an attack may add over the baseline after imports.
MAX_INCREASE_MB = 64
N = 40_000


def rle_string(counts):
    """COCO compressed RLE string of run lengths (pycocotools' rleToString,
    any run length)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            out.append(chr((ch | (0x20 if more else 0)) + 48))
    return ''.join(out)


def ref(**kwargs):
    r = dict(
        ref_id=1,
        ann_id=1,
        image_id=1,
        split='train',
        file_name='a.jpg',
        category_id=0,
        sentences=[dict(sent='the plane on the left', sent_id=7)])
    r.update(kwargs)
    return r


def write_refer(root,
                seg=((1, 1, 6, 1, 6, 6), ),
                height=8,
                width=8,
                refs=None,
                instances=None,
                raw_instances=None,
                raw_refs=None):
    """An 8x8 image and its REFER annotations (altered by the arguments)."""
    img_dir = root / 'images' / 'rrsisd' / 'JPEGImages'
    img_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / 'a.jpg'), np.zeros((8, 8, 3), np.uint8))
    if instances is None:
        image = dict(id=1, file_name='a.jpg')
        if height is not None:
            image.update(height=height, width=width)
        instances = dict(
            images=[image],
            annotations=[
                dict(id=1, image_id=1, categories_id=0, segmentation=seg)
            ],
            categories=[dict(id=0, name='airplane')])
    if raw_instances is None:
        raw_instances = json.dumps(instances)
    (root / 'instances.json').write_text(raw_instances)
    if raw_refs is None:
        raw_refs = pickle.dumps(refs if refs is not None else [ref()])
    (root / 'refs(unc).p').write_bytes(raw_refs)


def write_jsonl(root, bbox='[1, 1, 5, 5]', **line):
    """A jsonl line (``bbox`` as raw JSON text)."""
    write_refer(root)
    item = dict(
        split='train',
        image_id=1,
        sent='the plane on the left',
        file_name='a.jpg',
        category_id=0,
        ann_id=1,
        segmentation=[[1, 1, 6, 1, 6, 6]],
        bbox=None)
    item.update(line)
    text = json.dumps(item).replace('"bbox": null', f'"bbox": {bbox}')
    (root / 'a.jsonl').write_text(text + '\n')


def shared_sentences(n):
    """A refs pickle of ``n`` sentences sharing their text (memo)."""
    return pickle.dumps(
        [ref(sentences=[dict(sent='the plane', sent_id=i) for i in range(n)])],
        protocol=4)


def zigzag(points, side):
    coords = []
    for i in range(points):
        coords += [i % 2 * side, i % 2 * side]
    return [coords]


#: name -> (writer, dataset kwargs, error class, message part, checker
#: message part or None for dataset-only attacks)
ATTACKS = {
    'rle 40000^2, image entry 40000^2':
    (lambda r: write_refer(r, [dict(size=[N, N], counts=rle_string([N * N]))],
                           N, N), {}, 'MaskLimitError',
     'stated image size 40000x40000 = 1,600,000,000 '
     'pixels is more than max_mask_pixels=100,000,000', '[bad mask]'),
    'rle 40000^2, no image entry':
    (lambda r: write_refer(r, [dict(size=[N, N], counts=rle_string([N * N]))],
                           None), {}, 'MaskLimitError',
     'the mask is 40000x40000 = 1,600,000,000 '
     'pixels, more than max_mask_pixels', '[bad mask]'),
    'rle 9000^2, image entry 8x8':
    (lambda r:
     write_refer(r, [dict(size=[9000, 9000], counts=rle_string([9000**2]))]),
     {}, 'MaskLimitError', 'RLE size 9000x9000 differs from the stated '
     'image size 8x8', '[bad mask]'),
    'rle 9000^2 on an 8x8 image, image check off': (
        lambda r: write_refer(
            r, [dict(size=[9000, 9000], counts=rle_string([9000**2]))], None),
        dict(check_images=False), 'ValueError',
        'mask size (9000, 9000) differs from image size (8, 8)',
        '[size mismatch]'),
    'rle runs overrun the mask':
    (lambda r:
     write_refer(r, [dict(size=[8, 8], counts=rle_string([60, 10**6]))]), {},
     'MaskDecodeError', 'RLE has a run of 1000000 pixels, more than its '
     'size 8x8 has', '[bad mask]'),
    'rle string of 10**6 characters for an 8x8 mask':
    (lambda r: write_refer(r, [dict(size=[8, 8], counts='0' * 10**6)]), {},
     'MaskDecodeError', 'compressed RLE counts of 1,000,000 characters '
     'cannot describe a 8x8 mask', '[bad mask]'),
    'polygon, image entry 40000^2':
    (lambda r: write_refer(r, [[0, 0, N, 0, N, N, 0, N]], N, N), {},
     'MaskLimitError', 'stated image size 40000x40000', '[bad mask]'),
    'polygon vertex at 1e8':
    (lambda r: write_refer(r, [[0, 0, 1e8, 0, 1e8, 1e8]], 800, 800), {},
     'MaskLimitError', 'a polygon spans x 0..1e+08, y 0..1e+08, outside '
     'its 800x800 mask', '[bad mask]'),
    'polygon boundary of 5.6 M pixels':
    (lambda r: write_refer(r, zigzag(7000, 800), 800, 800), {},
     'MaskLimitError', 'polygons are more than 5,000,000 pixels long',
     '[bad mask]'),
    'segmentation a number':
    (lambda r: write_refer(r, 7), {}, 'MaskDecodeError',
     'segmentation must be an RLE dict', '[bad mask]'),
    'sentences a string':
    (lambda r: write_refer(r, refs=[ref(sentences='the plane')]), {},
     'AnnotationError', 'ref_id=1: expected "sentences", a list of dicts, '
     "got str 'the plane'", '[bad annotation]'),
    'images a dict': (lambda r: write_refer(
        r,
        instances=dict(
            images={'1': {}},
            annotations=[dict(id=1, image_id=1, segmentation=[])])), {},
                      'AnnotationError',
                      '"images": expected a list of image entry dicts, '
                      'got dict', 'check FAILED'),
    'ann_id a dict': (lambda r: write_refer(r, refs=[ref(ann_id={'a': 1})]),
                      {}, 'AnnotationError',
                      'expected "ann_id", an annotation id, a list of '
                      'them', '[bad annotation]'),
    'instances.json nested 200,000 deep':
    (lambda r: write_refer(r, raw_instances='[' * 200_000 + ']' * 200_000), {},
     'AnnotationLimitError', 'instances.json: JSON nested more than 100 '
     'deep', 'check FAILED'),
    'file_name absolute':
    (lambda r: write_refer(r, refs=[ref(file_name='/etc/hostname')]), {},
     'ImagePathError', "the image file name '/etc/hostname' is not a "
     'relative path inside the image folder', '[bad image path]'),
    'file_name with ..':
    (lambda r: write_refer(r, refs=[ref(file_name='../../../etc/hostname')]),
     {}, 'ImagePathError', "'../../../etc/hostname' is not a relative path",
     '[bad image path]'),
    '100,000 shared sentences in 1.2 MB of refs':
    (lambda r: write_refer(r, raw_refs=shared_sentences(100_000)), {},
     'AnnotationLimitError', 'sentences in', 'check FAILED'),
    'instances.json over max_annotation_bytes':
    (lambda r: write_refer(r), dict(max_annotation_bytes=100),
     'AnnotationLimitError', 'more than max_annotation_bytes=100', None),
    'jsonl line nested 200,000 deep':
    (lambda r: write_jsonl(r, bbox='[' * 200_000 + ']' * 200_000),
     dict(ann_file='a.jsonl'), 'AnnotationLimitError',
     'a.jsonl:1: JSON nested more than 100 deep', None),
    'jsonl file_name with ..':
    (lambda r: write_jsonl(r, file_name='x/../../a.jpg'),
     dict(ann_file='a.jsonl'), 'ImagePathError',
     "a.jsonl:1 ref_id=1: the image file name 'x/../../a.jpg'", None),
    'jsonl segmentation a string':
    (lambda r: write_jsonl(r, segmentation='abc'), dict(ann_file='a.jsonl'),
     'MaskDecodeError', 'a.jsonl:1 ref_id=1: malformed segmentation', None),
    'jsonl sent a list': (lambda r: write_jsonl(r, sent=['the', 'plane']),
                          dict(ann_file='a.jsonl'), 'AnnotationError',
                          'expected "sent", the expression text, got list',
                          None),
}

CHILD = r'''
import contextlib, io, json, resource, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']

def status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

import rsrefseg_mm  # noqa
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from helpers import load_script
checker = load_script('tools/dataset_converters/rrsisd.py')
init_default_scope('mmseg')
PIPELINE = [dict(type='LoadReferringImageFromFile'),
            dict(type='LoadReferringAnnotations')]
jobs = json.loads(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (status('VmSize') + (1 << 30),) * 2)
for name, root, kwargs, run_checker in jobs:
    base = status('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    result = dict(name=name)
    try:
        ds = DATASETS.build(dict(type='RRSISDDataset', data_root=root,
                                 split='train', pipeline=PIPELINE, **kwargs))
        ds[0]
        result.update(error=None)
    except Exception as e:
        result.update(error=type(e).__name__, message=str(e))
    if run_checker:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = checker.main([root, '--skip-count-check'])
        result.update(rc=rc, output=out.getvalue())
    result.update(increase_mb=(status('VmHWM') - base) / 2**20)
    print('RESULT ' + json.dumps(result), flush=True)
'''


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    """Run every attack in one subprocess; ``{name: result}``."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pytest.skip('needs /proc/self/clear_refs (Linux) to reset the peak')
    base = tmp_path_factory.mktemp('attacks')
    jobs = []
    for i, (name, (write, kwargs, _, _,
                   checker_msg)) in enumerate(ATTACKS.items()):
        root = base / str(i)
        write(root)
        jobs.append((name, str(root), kwargs, checker_msg is not None))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-c', CHILD,
         str(REPO), json.dumps(jobs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            result = json.loads(line[len('RESULT '):])
            found[result['name']] = result
    return found, proc


@pytest.mark.parametrize('name', list(ATTACKS))
def test_attack_refused_by_name_without_allocating(results, name):
    _, _, error, message, checker_msg = ATTACKS[name]
    found, proc = results
    assert name in found, (
        f'the subprocess ended (rc {proc.returncode}) before this attack '
        f'was refused: {proc.stderr[-3000:]}')
    result = found[name]
    assert result['error'] == error, result
    assert message in result['message'], result['message']
    assert result['increase_mb'] < MAX_INCREASE_MB, result
    if checker_msg is not None:
        assert result['rc'] == 1, result['output'][-2000:]
        assert checker_msg in result['output'], result['output'][-2000:]
        assert 'check passed' not in result['output']
    print(f'{name}: +{result["increase_mb"]:.1f} MB')


def test_attacks_are_small_files(tmp_path):
    """What they ask for is out of proportion to their size."""
    write, *_ = ATTACKS['rle 40000^2, image entry 40000^2']
    write(tmp_path / 'a')
    assert (tmp_path / 'a' / 'instances.json').stat().st_size < 1000
    write, *_ = ATTACKS['polygon vertex at 1e8']
    write(tmp_path / 'b')
    assert (tmp_path / 'b' / 'instances.json').stat().st_size < 1000


def test_valid_annotations_still_load_under_the_cap(tmp_path):
    """The fixture of the attacks, unaltered, loads (same subprocess-free
    path): the refusals above are the attacks', not the harness's."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import rsrefseg_mm  # noqa: F401
    write_refer(tmp_path)
    init_default_scope('mmseg')
    ds = DATASETS.build(
        dict(
            type='RRSISDDataset',
            data_root=str(tmp_path),
            split='train',
            pipeline=[
                dict(type='LoadReferringImageFromFile'),
                dict(type='LoadReferringAnnotations')
            ]))
    mask = ds[0]['gt_seg_map']
    assert mask.shape == (8, 8) and mask[3, 4] == 1 and mask[7, 0] == 0
    write_jsonl(tmp_path / 'j')
    ds = DATASETS.build(
        dict(
            type='RRSISDDataset',
            data_root=str(tmp_path / 'j'),
            ann_file='a.jsonl',
            split='train',
            pipeline=[]))
    assert len(ds) == 1
