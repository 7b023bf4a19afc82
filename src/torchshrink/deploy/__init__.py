"""torchshrink.deploy: export to ONNX (float or QDQ int8) and run in ONNX Runtime.

The submodules import onnx / onnxruntime lazily, inside the functions that need them.

Example:
    >>> from torchshrink.deploy.onnx_export import export_onnx
    >>> callable(export_onnx)
    True
"""
