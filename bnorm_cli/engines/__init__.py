"""Engines: compose plan -> moments -> fold -> apply (the serial engine runs in one process)."""
