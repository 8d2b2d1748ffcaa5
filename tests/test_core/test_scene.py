"""Scene inference without a network: the window grid, the strip mosaic,
window embeddings in memory / in a file, the mask GeoTIFF, presence raster
and polygons merged across seams, driven by a runtime whose answer is a
known object in the scene."""
import json
import zipfile

import numpy as np
import pytest
from rasterio.transform import from_origin

from rsrefseg_core.scene import (EmbeddingsFileError, ProbabilityMosaic,
                                 SceneGrid, ScenePredictor, WindowEmbeddings,
                                 window_boxes)
from helpers import write_tif

H, W = 150, 230
#: The referent: a 30 x 50 px rectangle across window seams.
OBJECT = (40, 70, 90, 140)
TRANSFORM = from_origin(500000, 4100000, 0.5, 0.5)


class ObjectRuntime:
    """Knows where the object is: probability 0.9 on it, 0.1 elsewhere;
    presence 0.9 for windows that hold part of it, 0.1 otherwise."""
    window_size = (64, 64)
    mask_threshold = 0.5
    presence_threshold = 0.5
    scene_presence_threshold = 0.5

    def __init__(self):
        self.encoded = 0
        self.decoded_texts = []

    def engine_key(self):
        return 'object-runtime'

    def encode_windows(self, windows):
        self.encoded += len(windows)
        return [
            dict(
                window=np.array(w.window, np.int64),
                mean=np.array([w.img.mean()], np.float32)) for w in windows
        ]

    def decode_windows(self, encodings, shape, text):
        self.decoded_texts.append(text)
        probs, presence = [], []
        for e in encodings:
            x, y, w, h = e['window'].tolist()
            assert (h, w) == tuple(shape)
            scene = np.full((H, W), 0.1, np.float32)
            if text in ('the box', 'the faint box'):
                y1, y2, x1, x2 = OBJECT
                scene[y1:y2, x1:x2] = 0.9
            prob = scene[y:y + h, x:x + w]
            probs.append(prob)
            found = 0.9 if text == 'the box' else 0.7
            presence.append(found if prob.max() > 0.5 else 0.1)
        return probs, np.array(presence, np.float32)


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 3000, (3, H, W), dtype=np.uint16)
    data[:, :, :10] = 0  # nodata margin
    return write_tif(
        tmp_path / 'scene.tif', data, 'EPSG:32633', TRANSFORM, nodata=0)


def test_grid_covers_the_scene_and_defaults_to_a_quarter_overlap():
    grid = SceneGrid.build(H, W, 64)
    assert grid.stride == (48, 48)
    covered = np.zeros((H, W), int)
    for y1, y2, x1, x2 in grid.boxes:
        assert (y2 - y1, x2 - x1) == (64, 64)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    assert len(grid) == len(grid.boxes) == grid.shape[0] * grid.shape[1]
    assert window_boxes(20, 30, (64, 64), (48, 48)) == [(0, 20, 0, 30)]
    with pytest.raises(ValueError, match='leaves gaps'):
        SceneGrid.build(H, W, 64, 80)
    with pytest.raises(ValueError, match='crop_size'):
        SceneGrid.build(H, W, 0)


def test_mosaic_averages_overlaps_and_absent_windows_count_nothing():
    rows = {}
    mosaic = ProbabilityMosaic(4, 6, 4,
                               lambda r, p: rows.update({r: p.copy()}))
    mosaic.add((0, 4, 0, 4), np.full((4, 4), 0.2, np.float32))
    mosaic.add((0, 4, 2, 6), np.full((4, 4), 0.6, np.float32))
    mosaic.close()
    out = np.concatenate([rows[r] for r in sorted(rows)])
    np.testing.assert_allclose(out[:, :2], 0.2)
    np.testing.assert_allclose(out[:, 2:4], 0.4)
    np.testing.assert_allclose(out[:, 4:], 0.6)
    rows.clear()
    mosaic = ProbabilityMosaic(4, 6, 4,
                               lambda r, p: rows.update({r: p.copy()}))
    mosaic.add((0, 4, 0, 4), None)  # judged absent
    mosaic.add((0, 4, 2, 6), np.full((4, 4), 0.6, np.float32))
    mosaic.close()
    out = np.concatenate([rows[r] for r in sorted(rows)])
    np.testing.assert_allclose(out[:, :2], 0.0)
    np.testing.assert_allclose(out[:, 2:], 0.6)


def test_mosaic_holds_one_window_of_rows_and_writes_rows_in_order():
    written = []
    grid = SceneGrid.build(300, 40, (32, 40), (24, 40))
    mosaic = ProbabilityMosaic(300, 40, 32, lambda r, p: written.append(
        (r, len(p))))
    for box in grid.boxes:
        mosaic.add(box, np.ones((32, 40), np.float32))
        assert mosaic.sum.shape == (32, 40)
    mosaic.close()
    assert written[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in zip(written, written[1:]))
    assert written[-1][0] + written[-1][1] == 300
    with pytest.raises(ValueError, match='row by row'):
        mosaic.add((0, 32, 0, 40), None)


@pytest.mark.parametrize('max_memory', [1 << 20, 0])
def test_scene_answers_where_the_object_is(scene, tmp_path, max_memory):
    runtime = ObjectRuntime()
    predictor = ScenePredictor(
        runtime, window_batch=3, max_memory=max_memory, progress=False)
    predictor.set_scene(scene)
    spill = predictor.embeddings.path
    assert runtime.encoded == len(predictor.grid)
    box, none = predictor.predict(['the box', 'the ship'],
                                  out_dir=str(tmp_path / 'out'),
                                  keep_probability=True)
    y1, y2, x1, x2 = OBJECT
    expected = np.zeros((H, W), np.uint8)
    expected[y1:y2, x1:x2] = 1
    np.testing.assert_array_equal(box.mask, expected)
    assert box.found and box.target_pixels == expected.sum()
    assert box.presence == pytest.approx(0.9)
    # no window holds "the ship": nothing is painted
    assert not none.found and none.mask.sum() == 0
    assert none.presence == pytest.approx(0.1)
    assert none.geojson['features'] == []
    # a single polygon, merged across the strip and window seams
    features = box.geojson['features']
    assert len(features) == 1
    assert features[0]['properties']['area_px'] == expected.sum()
    xs = [p[0] for p in features[0]['geometry']['coordinates'][0]]
    ys = [p[1] for p in features[0]['geometry']['coordinates'][0]]
    assert (min(xs), max(xs)) == (500000 + x1 * 0.5, 500000 + x2 * 0.5)
    assert (min(ys), max(ys)) == (4100000 - y2 * 0.5, 4100000 - y1 * 0.5)
    import rasterio
    with rasterio.open(box.mask_path) as src:
        assert src.transform == TRANSFORM and src.crs.to_epsg() == 32633
        mask = src.read(1)
    np.testing.assert_array_equal(mask[:, 10:], expected[:, 10:])
    assert (mask[:, :10] == 255).all()  # the nodata margin
    with rasterio.open(box.presence_path) as src:
        grid = src.read(1)
        assert src.transform.a == 0.5 * predictor.grid.stride[1]
        assert src.shape == box.presence_grid.shape
    assert np.nanmax(grid) == pytest.approx(0.9)
    assert json.load(open(box.geojson_path))['features'] == features
    predictor.close()
    if max_memory == 0:  # the temporary file is gone
        assert spill is not None and not (tmp_path / spill).exists()
    else:
        assert spill is None


def test_scene_presence_threshold(scene):
    """Windows below the scene's presence threshold count nothing: by
    default the runtime's scene threshold, or the one given; never below
    the model's threshold, under which windows are not decoded."""
    runtime = ObjectRuntime()
    texts = ['the box', 'the faint box']  # window presence 0.9 / 0.7
    cases = [(0.5, None), (0.8, None), (0.5, 0.8), (0.8, 0.6)]
    found = {}
    for case in cases:
        runtime.scene_presence_threshold, given = case
        predictor = ScenePredictor(
            runtime, progress=False, presence_threshold=given)
        assert predictor.presence_threshold == (given or case[0])
        predictor.set_scene(scene)
        found[case] = [r.found for r in predictor.predict(texts)]
        predictor.close()
    assert found == {
        (0.5, None): [True, True],
        (0.8, None): [True, False],
        (0.5, 0.8): [True, False],
        (0.8, 0.6): [True, True]
    }
    with pytest.raises(ValueError, match=r'must be in \[0.5, 1\)'):
        ScenePredictor(runtime, presence_threshold=0.4)
    runtime.presence_threshold = runtime.scene_presence_threshold = None
    with pytest.raises(ValueError, match='no presence output'):
        ScenePredictor(runtime, presence_threshold=0.6)


def test_embeddings_file_is_kept_reopened_and_checked(scene, tmp_path):
    path = str(tmp_path / 'scene.emb.npz')
    runtime = ObjectRuntime()
    predictor = ScenePredictor(runtime, progress=False)
    predictor.set_scene(scene, embeddings_file=path)
    first = predictor.predict('the box', keep_probability=True)
    predictor.close()
    runtime = ObjectRuntime()
    predictor = ScenePredictor(runtime, progress=False)
    predictor.set_scene(scene, embeddings_file=path)
    assert runtime.encoded == 0  # read back, not encoded
    again = predictor.predict('the box', keep_probability=True)
    np.testing.assert_array_equal(first.probability, again.probability)
    predictor.close()
    # another grid (or model, or scene) is refused by name
    with pytest.raises(EmbeddingsFileError, match='another grid'):
        ScenePredictor(
            ObjectRuntime(), crop_size=80, progress=False).set_scene(
                scene, embeddings_file=path)


@pytest.mark.parametrize('max_memory', [0, 1 << 20])
def test_embeddings_read_only_the_arrays_asked_for(tmp_path, max_memory):
    """``get(i, names)``: those arrays (from memory or from the file, where
    the other arrays are not read), the window's empty answer, and an
    unknown name refused by name."""
    stored = WindowEmbeddings(dict(scene='s'), max_memory=max_memory)
    arrays = dict(
        img_feats=np.arange(6, dtype=np.float32).reshape(1, 2, 3),
        image_embeddings=np.ones((2, 2), np.float32))
    stored.put(0, arrays)
    stored.put(1, None)
    stored.finish()
    read = []
    if max_memory == 0:
        _read = stored._read
        stored._read = lambda entry, *a: read.append(entry) or _read(entry, *a)
    got = stored.get(0, ('img_feats', ))
    assert list(got) == ['img_feats']
    np.testing.assert_array_equal(got['img_feats'], arrays['img_feats'])
    if max_memory == 0:
        assert len(read) == 1 and 'img_feats' in read[0]
    assert stored.get(1, ('img_feats', )) is None
    assert set(stored.get(0)) == set(arrays)
    with pytest.raises(KeyError, match='no .*img_global'):
        stored.get(0, ('img_global', ))
    stored.close()


def test_damaged_embeddings_files_are_refused(tmp_path):
    meta = dict(scene='s', engine='e')
    path = str(tmp_path / 'e.npz')
    store = WindowEmbeddings(meta, path)
    store.put(0, dict(a=np.zeros((2, 3), np.float32)))
    store._zip.close()  # interrupted: no meta.json
    with pytest.raises(EmbeddingsFileError, match='not a complete'):
        WindowEmbeddings.open(path, meta)
    store = WindowEmbeddings(meta, path)
    store.put(0, dict(a=np.zeros((2, 3), np.float32)))
    store.finish()
    store.close()
    # an array whose header disagrees with meta.json
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    meta_json = json.loads(entries['meta.json'])
    meta_json['arrays']['a'][0] = [200000, 3]
    entries['meta.json'] = json.dumps(meta_json).encode()
    with zipfile.ZipFile(path, 'w') as zf:
        for n, b in entries.items():
            zf.writestr(n, b)
    reopened = WindowEmbeddings.open(path, meta)
    with pytest.raises(EmbeddingsFileError, match='meta.json says'):
        reopened.get(0)
    reopened.close()
    with pytest.raises(EmbeddingsFileError, match='another engine'):
        WindowEmbeddings.open(path, dict(engine='other'))
