"""Run an exported RSRefSeg with ONNX Runtime.

Needs NumPy, OpenCV, Pillow, ONNX Runtime and a tokenizer (SentencePiece for
SigLIP, ftfy + regex for CLIP); rasterio for GeoTIFFs. Imports no torch,
mmcv, mmengine, mmseg or mmpretrain; ``rsrefseg_mm`` builds on its tokenizers,
raster I/O and drawing.
"""
from .predictor import OnnxReferringPredictor, OnnxResult

__all__ = ['OnnxReferringPredictor', 'OnnxResult']
