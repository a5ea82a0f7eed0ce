"""The model registry link: where a model's training reference and version metadata come
from, and where its monitoring summary goes back to.

One registry is supported, MLflow: a tracking server or a local store.
:mod:`pipeline.registry.mlflow` names a trained model and holds the client,
:mod:`pipeline.registry.reference` brings its training reference in and
:mod:`pipeline.registry.summary` logs its monitoring summary out. The link is used by
commands only (``inferwatch baseline set --mlflow-run``, ``inferwatch registry
log-summary``); workers never import it, and ``mlflow`` is imported lazily, so it is needed
only where those commands run.
"""
