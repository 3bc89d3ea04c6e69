"""The pure core: per-batch moments, the fold, affine maps and the `BatchNorm` model.

No file I/O, no Typer, no Rich: data in and out are polars/pyarrow/numpy objects.
"""
