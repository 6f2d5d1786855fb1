"""Readers for sign-language annotation files.

Each reader turns one dataset's native annotation format into rows of the canonical
manifest (:mod:`sldata.manifest`) and records every row it cannot accept in a
:class:`~sldata.annotations.rejects.RejectLog`, with a reason code and the file, row and
field at fault. Nothing is dropped silently.
"""

from sldata.annotations.rejects import Reason, Reject, RejectLog

__all__ = ["Reason", "Reject", "RejectLog"]
