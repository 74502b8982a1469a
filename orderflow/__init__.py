"""orderflow: the command-line client of the order execution engine (`orderflow --help`, or
`python -m orderflow --help`). Exit codes and options are described in `orderflow/__main__.py`."""

__version__ = "0.1.0"
