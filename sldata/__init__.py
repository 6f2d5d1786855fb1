"""sldata: the data library of the sign-language pipeline.

Each pipeline stage is a plain, typed function here with a command-line wrapper in
:mod:`sldata.cli` (``python -m sldata --help``).
"""

__version__ = "0.1.0"
