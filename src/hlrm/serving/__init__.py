"""Serving a trained run over HTTP: ``hlrm serve RUN_DIR`` (needs ``pip install "hlrm[serve]"``).

:mod:`hlrm.serving.service` answers every question the server is asked (recommendations,
similar items, item search, model facts) from one loaded :class:`~hlrm.runs.Run`, with no web
framework involved; :mod:`hlrm.serving.batching` gathers concurrent recommendation requests into
one scoring call; :mod:`hlrm.serving.app` puts both behind FastAPI and serves the page in
``static/``. Importing this package imports neither FastAPI nor uvicorn.
"""
