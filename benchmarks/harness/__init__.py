"""What every script in ``benchmarks/`` is built on.

``machine`` (the machine line, peak memory, code version, what a smoke run reduced), ``cli``
(the parser and its shared options), ``tables`` (columns -> Markdown, CSV, a docs block),
``arms`` (arms in alternating rounds, in-process or in child processes; ratios, spreads),
``timing`` (timed windows of a loop, timed loaders, NVML utilization), ``plain`` (the plain
PyTorch reference loop), ``runs`` (``medvision`` commands and what their run folders hold).

A script run as ``python benchmarks/x.py`` has ``benchmarks/`` first on ``sys.path``; heavy
imports (torch, medvision) happen inside functions, so that ``--help`` stays quick.
"""
