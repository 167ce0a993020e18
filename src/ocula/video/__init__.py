"""Video and frame-sequence recognition: decoding, clip datasets, the moving-shapes generator.

    ocula train clips/ --model cnn_lstm --backbone resnet18 --frames 16 --out runs/actions
    ocula predict runs/actions match.mp4 more_clips/ --topk 3
    ocula datasets make moving-shapes out/

Heavy imports (PyAV) happen inside the functions that decode, so importing this package is cheap.
"""
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"})

__all__ = ["VIDEO_EXTENSIONS"]
