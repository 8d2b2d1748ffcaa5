"""Files a referring prediction is saved as: :mod:`rsrefseg_core.outputs`
(shared with the ONNX Runtime predictor) for ``SegDataSample`` results of
:func:`~rsrefseg_mm.apis.inference_referring` /
:class:`~rsrefseg_mm.apis.ReferringPredictor`."""
from typing import Dict

import numpy as np
from mmseg.structures import SegDataSample

from rsrefseg_core import outputs
from rsrefseg_core.geo import DEFAULT_MIN_AREA_PX, RasterImage
from rsrefseg_core.outputs import OUTPUT_RESOLUTIONS
from rsrefseg_core.visualization import FILL_ALPHA


def _mask(result: SegDataSample) -> np.ndarray:
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)


def render_overlay(image: RasterImage,
                   result: SegDataSample,
                   text: str,
                   alpha: float = FILL_ALPHA) -> np.ndarray:
    """:func:`rsrefseg_core.outputs.render_overlay` of a result."""
    return outputs.render_overlay(image, _mask(result), text, alpha)


def render_heatmap(image: RasterImage, result: SegDataSample,
                   text: str) -> np.ndarray:
    """:func:`rsrefseg_core.outputs.render_heatmap` of a result."""
    return outputs.render_heatmap(image,
                                  result.global_map.data[0].cpu().numpy(),
                                  text)


def save_referring_outputs(image: RasterImage,
                           result: SegDataSample,
                           text: str,
                           out_dir: str,
                           stem: str,
                           min_area_px: float = DEFAULT_MIN_AREA_PX,
                           alpha: float = FILL_ALPHA,
                           output_resolution: str = 'working',
                           threshold: float = 0.5) -> Dict[str, str]:
    """:func:`rsrefseg_core.outputs.save_outputs` of a result (its mask,
    global activation and, for ``'native'`` masks, probability).

    Args:
        image (RasterImage): The image the model saw.
        result (SegDataSample): From :func:`inference_referring`.
        text, out_dir, stem, min_area_px, alpha, output_resolution,
        threshold: See :func:`rsrefseg_core.outputs.save_outputs`.

    Returns:
        dict[str, str]: The written files by kind.
    """
    return outputs.save_outputs(image, _mask(result),
                                result.global_map.data[0].cpu().numpy(), text,
                                out_dir, stem, min_area_px, alpha,
                                output_resolution,
                                result.seg_logits.data[0].cpu().numpy(),
                                threshold)


__all__ = [
    'OUTPUT_RESOLUTIONS', 'render_overlay', 'render_heatmap',
    'save_referring_outputs'
]
