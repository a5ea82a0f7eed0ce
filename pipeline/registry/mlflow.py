"""MLflow as the model registry: what names a trained model, and the client both directions use.

:func:`parse_run_uri` reads what names a trained model: ``RUN_ID``, ``runs:/RUN_ID[/PATH]``,
``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or an MLflow 3 logged model ``models:/m-…``.
The two directions live beside this module: :mod:`pipeline.registry.reference` (in: a training
reference for ``inferwatch baseline set --mlflow-run``) and :mod:`pipeline.registry.summary`
(out: a monitoring summary for ``inferwatch registry log-summary``). Both reach MLflow through
the client here, and both raise :class:`RegistryError`.

``mlflow`` is imported inside the functions that talk to it: the workers never need it, and
a missing install is one :class:`RegistryError` naming ``pip install 'inferwatch[registry]'``
(or ``pip install mlflow``).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["RegistryError", "RunTarget", "parse_run_uri"]


class RegistryError(RuntimeError):
    """The registry cannot give or take what was asked; the message is one line saying why."""


# --------------------------------------------------------------------------- naming a run
class RunTarget(NamedTuple):
    """What ``--mlflow-run`` named, parsed; exactly one of run_id, model_name, logged_model."""

    uri: str
    run_id: str | None = None
    artifact_path: str | None = None  # the PATH of runs:/RUN_ID/PATH
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None
    logged_model: str | None = None


def parse_run_uri(text: str) -> RunTarget:
    """Parse a run id, ``runs:/`` or ``models:/`` URI. Pure; ``ValueError`` says what is accepted.

    >>> parse_run_uri("runs:/abc123/data/train.parquet")[1:3]
    ('abc123', 'data/train.parquet')
    >>> t = parse_run_uri("models:/fraud/3"); (t.model_name, t.model_version)
    ('fraud', '3')
    >>> parse_run_uri("models:/fraud@champion").alias, parse_run_uri("abc123").run_id
    ('champion', 'abc123')
    >>> parse_run_uri("models:/m-0a1b").logged_model
    'm-0a1b'
    """
    uri = text.strip()
    accepted = ("RUN_ID, runs:/RUN_ID[/PATH], models:/NAME/VERSION, models:/NAME@ALIAS "
                "or models:/MODEL_ID")
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").strip("/").partition("/")
        if run_id:
            return RunTarget(uri, run_id=run_id, artifact_path=path or None)
    elif uri.startswith("models:/"):
        rest = uri.removeprefix("models:/").strip("/")
        name, at, alias = rest.rpartition("@")
        if at and name and alias and "/" not in alias:
            return RunTarget(uri, model_name=name, alias=alias)
        name, slash, version = rest.rpartition("/")
        if slash and name and version.isdigit():
            return RunTarget(uri, model_name=name, model_version=version)
        if rest.startswith("m-") and "/" not in rest:
            return RunTarget(uri, logged_model=rest)
        if slash and name and version:
            raise ValueError(f"invalid model URI {text!r}: the version must be a number "
                             f"(or use models:/{name}@ALIAS)")
    elif uri and ":" not in uri and "/" not in uri:
        return RunTarget(uri, run_id=uri)
    raise ValueError(f"invalid MLflow run {text!r}: use {accepted}")


# --------------------------------------------------------------------------- the client
def _mlflow() -> Any:
    try:
        import mlflow
        import mlflow.artifacts
        import mlflow.data
    except ImportError as exc:
        raise RegistryError(f"the MLflow link needs mlflow (no module named {exc.name!r}): "
                            "pip install 'inferwatch[registry]'") from None
    return mlflow


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _client(tracking_uri: str | None) -> tuple[Any, str]:
    """(MlflowClient, its tracking URI). A ``sqlite:`` store that does not exist is an error
    here: MLflow would create an empty one and then find nothing in it."""
    mlflow = _mlflow()
    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if db and db != ":memory:" and not Path(db).is_file():
            default = "" if tracking_uri else " (MLflow's default; set MLFLOW_TRACKING_URI)"
            raise RegistryError(f"no MLflow store at {db}: tracking URI {uri}{default}")
    try:
        return mlflow.MlflowClient(tracking_uri=uri), uri
    except Exception as exc:  # an unknown scheme, a file store refused in MLflow 3 ...
        raise RegistryError(f"MLflow ({uri}): {_first_line(exc)}") from exc


@contextlib.contextmanager
def _errors(uri: str) -> Iterator[None]:
    """MLflow's and the network's exceptions as one-line :class:`RegistryError`s."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"MLflow ({uri}): {_first_line(exc)}") from exc


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
