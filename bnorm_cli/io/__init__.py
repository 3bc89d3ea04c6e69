"""Input and output: formats, readers, writers, atomic files, the statistics file, exports."""
