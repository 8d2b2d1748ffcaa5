"""rsrefseg_core.predictor.zero_nodata: the one function that sets the
predictions of pixels without data to background (segmentor, PyTorch
predictor, ONNX Runtime predictor)."""
import numpy as np
import pytest
import torch

from rsrefseg_core.predictor import zero_nodata


@pytest.fixture
def nodata():
    mask = np.zeros((6, 8), bool)
    mask[:, :2] = True
    mask[5, 7] = True
    return mask


def test_numpy_arrays_of_any_leading_shape(nodata):
    mask2d = np.ones((6, 8), np.uint8)
    prob3d = np.full((1, 6, 8), 0.7, np.float32)
    maps4d = np.full((2, 1, 6, 8), 0.3, np.float64)
    zero_nodata(nodata, mask2d, prob3d, maps4d, where='scene.tif')
    assert (mask2d[nodata] == 0).all() and (mask2d[~nodata] == 1).all()
    assert (prob3d[0][nodata] == 0).all()
    assert (prob3d[0][~nodata] == np.float32(0.7)).all()
    for m in maps4d.reshape(2, 6, 8):
        assert (m[nodata] == 0).all() and (m[~nodata] == 0.3).all()


@pytest.mark.parametrize('as_tensor', [False, True])
def test_torch_tensors_in_place(nodata, as_tensor):
    pred = torch.ones(1, 6, 8, dtype=torch.int64)
    logits = torch.full((1, 6, 8), 0.9)
    view = logits[:, :, :]  # a view: the base changes too
    mask = torch.as_tensor(nodata) if as_tensor else nodata
    zero_nodata(mask, pred, view, where='sample 0')
    want = torch.as_tensor(~nodata)[None]
    assert torch.equal(pred.bool(), want)
    assert torch.equal(logits > 0, want)


def test_non_bool_mask_and_no_nodata(nodata):
    arr = np.ones((6, 8))
    zero_nodata(nodata.astype(np.uint8) * 255, arr)  # non-zero = nodata
    assert (arr[nodata] == 0).all() and arr.sum() == (~nodata).sum()
    arr = np.ones((6, 8))
    zero_nodata(None, arr)  # no mask: nothing changes
    zero_nodata(np.zeros((6, 8), bool), arr)
    assert (arr == 1).all()


@pytest.mark.parametrize('shape', [(1, 6, 9), (7, 8), (8, )])
def test_shape_mismatch_names_the_sample(nodata, shape):
    with pytest.raises(
            ValueError,
            match=r'nodata_mask \(6, 8\) does not match the '
            r'prediction .* of scene_3\.tif'):
        zero_nodata(nodata, np.ones(shape), where='scene_3.tif')
    # nothing was written before the error
    ok = np.ones((6, 8))
    with pytest.raises(ValueError):
        zero_nodata(nodata, ok, np.ones((2, 2)), where='x')
    assert (ok == 1).all()
    # an all-valid mask still checks the shapes
    with pytest.raises(ValueError, match='scene_3.tif'):
        zero_nodata(
            np.zeros((6, 8), bool), np.ones(shape), where='scene_3.tif')


def test_mask_must_be_2d():
    with pytest.raises(
            ValueError, match=r'nodata_mask of sample 2 must be '
            r'\(H, W\)'):
        zero_nodata(
            np.zeros((1, 6, 8), bool), np.ones((6, 8)), where='sample 2')
