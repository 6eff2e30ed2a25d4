"""Applying a trained model: load it, predict, explain, export, write the predictions.

- :mod:`~medvision.apply.inference`: ``medvision.load_model(path).predict(x)``;
  :mod:`~medvision.apply.volume_inference` for volume models.
- :mod:`~medvision.apply.tta`: test-time augmentation.
- :mod:`~medvision.apply.explain`, :mod:`~medvision.apply.explanations`: Grad-CAM heat maps.
- :mod:`~medvision.apply.export`: ONNX, TorchScript and weight files with their record.
- :mod:`~medvision.apply.bundle`, :mod:`~medvision.apply.model_card`: bundles to share
  (safetensors, config.json, model card, ONNX); :mod:`~medvision.apply.onnx_runtime`: the
  bundle's ONNX file behind the same preparation and writers (``--runtime onnx``).
- :mod:`~medvision.apply.prediction`, :mod:`~medvision.apply.prediction_output`,
  :mod:`~medvision.apply.volume_writer`, :mod:`~medvision.apply.seg_writer`: what
  ``medvision predict`` writes (DICOM SEG included).

The preprocessing record these read is :mod:`medvision.models.record`. Names load on first use.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
