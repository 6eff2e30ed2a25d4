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
  :mod:`~medvision.apply.volume_writer`: what ``medvision predict`` writes.

The preprocessing record these read is :mod:`medvision.models.record`. Names load on first use.
"""

from medvision.utils.imports import lazy_attributes

_WHERE = {
    "ClassificationPredictionWriter": "prediction",
    "PredictionWriter": "prediction",
    "Predictor": "inference",
    "SegmentationPredictionWriter": "prediction",
    "VolumePredictionWriter": "volume_writer",
    "VolumeResult": "volume_inference",
    "load_model": "inference",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
