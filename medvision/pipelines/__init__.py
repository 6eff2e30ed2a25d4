"""Workflows that join data and models: segment-then-classify, and a classifier's cached features.

These are the only modules (with ``cli``, ``crossval`` and ``compare``) that import both
:mod:`medvision.data` and :mod:`medvision.models`.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
