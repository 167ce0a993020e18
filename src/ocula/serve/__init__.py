"""Serve a model over HTTP: `ocula serve RUN` or `ocula.serve.serve(RUN)`; `create_app(model)` for the
FastAPI app itself (tests, embedding in another ASGI server). See docs/serve.md."""
from __future__ import annotations

import importlib


def create_app(model, name=None, **options):
    from ocula.serve.app import create_app as _create_app  # lazy: fastapi stays out of ocula --help

    return _create_app(model, name, **options)


def serve(run, **options) -> None:
    # importlib: the runner loads a model (torch); `ocula --help` imports this package for its CLI
    importlib.import_module("ocula.serve.runner").serve(run, **options)


__all__ = ["create_app", "serve"]
