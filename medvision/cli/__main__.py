"""``python -m medvision.cli ...``: the ``medvision`` command (DDP launches its workers so)."""

from medvision.cli import main

main()
