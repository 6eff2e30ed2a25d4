"""Plumbing every layer may use: atomic files, run folders, provenance, safe checkpoint reading.

- :mod:`~medvision.utils.files`: files written whole or not at all, CSV and PNG helpers.
- :mod:`~medvision.utils.runs`: run folders (``<root>/version_<N>/``) and finding them again.
- :mod:`~medvision.utils.checkpoints`: reading checkpoints without running code in them.
- :mod:`~medvision.utils.provenance`: package versions, hardware and commit of a run.
- :mod:`~medvision.utils.imports`: objects by dotted path, lazily exported package names.
- :mod:`~medvision.utils.steps`: the interval of medvision's own per-step reads.
- :mod:`~medvision.utils.sizes`: image sizes as options give them (``256`` or ``[h, w]``).
- :mod:`~medvision.utils.class_names`: class names, checked the same way by data and models.
- :mod:`~medvision.utils.moved`: the module paths of earlier releases, still importable.

Nothing here imports another layer of medvision.
"""
