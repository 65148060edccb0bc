"""Watching a run from a browser (``--serve``): the frame hub, its sink and the web server.

:mod:`.hub` encodes each annotated frame once and keeps a latest-frame slot per
viewer; :mod:`.sink` feeds it from the pipeline; :mod:`.server` (aiohttp) serves
the page, each source's frames (a WebSocket the page acknowledges frame by frame,
and MJPEG), snapshots, the state and a WebSocket of records and controls;
:mod:`.address` checks that the address can be served before the model loads.
"""
