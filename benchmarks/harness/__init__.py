"""The benchmark harness: what every script in ``benchmarks/`` is built on.

A benchmark script declares what it measures: its arms (medvision's loop and a plain PyTorch
loop on the same model and data, two checkouts, two writers, ...), the measure of one arm, and
the table it prints (a :class:`harness.tables.Table` of columns). The harness does the rest:

- ``machine``: the machine line every printed figure carries, peak memory, the code version,
  the first line that names what a reduced (smoke) run left out;
- ``cli``: the script's parser (its ``--help`` is the module docstring), option types, the
  command as typed;
- ``tables``: Markdown tables, CSV, a docs page's block between two markers;
- ``arms``: arms in alternating rounds, each in-process or in its own process, the ratio to
  the reference arm of the same run, and median, min and max over rounds;
- ``timing``: the timed window of a training loop, a timed loader, NVML GPU utilization;
- ``plain``: the plain PyTorch reference (network, loss, training step) that medvision's loop
  is held against;
- ``runs``: ``medvision`` commands in child processes and what their runs write (CSV rows, the
  best epoch), synthetic lung folders of any size.

A script run as ``python benchmarks/x.py`` has ``benchmarks/`` first on ``sys.path`` and
imports ``from harness.tables import Table``; ``tests/conftest.py``'s ``load_benchmark`` puts
the folder there while it loads a script. Heavy imports (torch, medvision) happen inside the
functions, so that ``python benchmarks/x.py --help`` stays quick.
"""
