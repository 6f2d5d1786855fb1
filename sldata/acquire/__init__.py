"""Acquisition stage: fetch every source video once, validate it, record the outcome.

Modules: :mod:`~sldata.acquire.probe` (decode-based validation of a video file),
:mod:`~sldata.acquire.store` (a local folder consulted before the network),
:mod:`~sldata.acquire.ledger` (the Parquet download ledger), :mod:`~sldata.acquire.download`
(yt-dlp based, parallel, retrying downloader) and :mod:`~sldata.acquire.coverage`
(usable-clip counts per dataset and split).
"""
