"""The command line: Typer commands, shared options, the console (the only Rich import), exits."""
