"""The command line: Typer commands, shared options, the console (the only Rich import), exits."""

import os

# The command line does no linear algebra, but numpy starts OpenBLAS's worker
# threads as it loads and they spin: ~0.05-0.1 CPU-s of every command's start-up
# on a 2-core host. A user's own setting is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
