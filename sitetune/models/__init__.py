"""Models: cards, MONAI networks, the registry of versions and aliases, ONNX export,
inference engines (ONNX Runtime, torch) and sliding-window segmentation.

`sitetune.models.serving.ModelServer` resolves ``name:alias`` per request and keeps an
engine per version; `sitetune.models.inference.segment` turns a volume into a label map
on the input's grid. torch and onnxruntime are imported only where a model runs
(`sitetune.models.engines`).
"""
