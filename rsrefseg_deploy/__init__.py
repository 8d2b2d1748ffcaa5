"""Run an exported RSRefSeg with ONNX Runtime.

Imports no torch, mmcv, mmengine, mmseg or mmpretrain: the engine is ONNX
Runtime, everything around it comes from :mod:`rsrefseg_core`.
"""
from .predictor import OnnxReferringPredictor, OnnxResult

__all__ = ['OnnxReferringPredictor', 'OnnxResult']
