from rsrefseg_core.deploy_info import file_sha256
from .export import DEFAULT_OPSET, export_onnx, model_input_size
from .onnx_graphs import DecoderGraph, ImageEncoderGraph, TextEncoderGraph

__all__ = [
    'DEFAULT_OPSET', 'export_onnx', 'file_sha256', 'model_input_size',
    'DecoderGraph', 'ImageEncoderGraph', 'TextEncoderGraph'
]
