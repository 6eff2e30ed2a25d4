"""Workflows that join data and models: segment-then-classify, and a classifier's cached features.

These are the only modules (with ``cli``, ``crossval`` and ``compare``) that import both
:mod:`medvision.data` and :mod:`medvision.models`.
"""

from medvision.pipelines.features import FeatureDataModule
from medvision.pipelines.segment_then_classify import (
    HAM10000LesionCropDataModule,
    predict_lesion_masks,
)

__all__ = ["FeatureDataModule", "HAM10000LesionCropDataModule", "predict_lesion_masks"]
