"""What the PyTorch model (``rsrefseg_mm``) and the ONNX Runtime predictor
(``rsrefseg_deploy``) share, without torch or OpenMMLab: the tokenizers,
raster reading and writing (``geo``), the predictor's image / expression
flow, the drawn outputs and the cache of encoded images.

Needs NumPy, OpenCV, Pillow and a tokenizer (SentencePiece for SigLIP,
ftfy + regex for CLIP); rasterio for GeoTIFFs.
"""
