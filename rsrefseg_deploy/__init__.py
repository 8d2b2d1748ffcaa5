"""Run an exported RSRefSeg with ONNX Runtime: NumPy, ONNX Runtime and a
tokenizer (SentencePiece for SigLIP, ftfy + regex for CLIP); rasterio for
GeoTIFFs. No torch, mmcv, mmengine, mmseg or mmpretrain."""
