"""Multi-step workflows built from medvision's modules (e.g. segment, then classify)."""

from medvision.pipelines.segment_then_classify import predict_lesion_masks

__all__ = ["predict_lesion_masks"]
