"""A training reference in from MLflow (``inferwatch baseline set --mlflow-run``).

:func:`find_reference` resolves what :func:`~pipeline.registry.mlflow.parse_run_uri` reads to
the run that trained the model (a model version's ``run_id``, or its logged model's
``source_run_id``) and to a local file of ``InferenceEvent`` records that
:func:`pipeline.scoring.baseline_files.build_from_file` reads (JSON, JSON lines, Parquet):

1. an artifact of that run, when named (``artifact``, or the PATH of a ``runs:/`` URI that
   ends in ``.json``/``.jsonl``/``.ndjson``/``.parquet``/``.pq``), downloaded with
   ``mlflow.artifacts.download_artifacts``;
2. else the run's logged dataset inputs (``mlflow.log_input``: ``run.inputs.dataset_inputs``),
   context ``training`` first, then the others in logged order; the first whose source is a
   file (``mlflow.data`` filesystem sources: a local path, or an artifact-store URI such as
   ``s3://``, downloaded with the source's own ``load``) in one of those formats. Other
   sources (HTTP, Delta, Hugging Face, Spark, CSV files) are skipped, and the error says why.

The baseline records where it came from in its ``source`` (:attr:`ReferenceData.source`:
``mlflow:models:/NAME/V run=… dataset=NAME@DIGEST``); the run's and version's tags have no
field on the baseline, so the command prints them and this module logs them. ``mlflow`` is
imported lazily, as everywhere in :mod:`pipeline.registry`.
"""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.registry.mlflow import (
    RegistryError,
    RunTarget,
    _client,
    _errors,
    _first_line,
    _mlflow,
    _not_found,
    parse_run_uri,
)

__all__ = ["ReferenceData", "baseline_from_mlflow", "find_reference"]

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".pq")  # what build_from_file reads
TRAINING = "training"  # the mlflow.data.context of a training dataset input


@dataclass(frozen=True)
class ReferenceData:
    """A local file of reference events and the registry's metadata about it."""

    path: Path
    run_id: str
    run_name: str
    experiment_id: str
    model_name: str | None = None
    model_version: str | None = None
    dataset: str | None = None  # "NAME@DIGEST" of the dataset input used
    context: str | None = None  # its mlflow.data.context ("none" when it has none)
    artifact: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)  # user tags (no mlflow.*)
    version_tags: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The baseline's ``source``: what it was built from, in one line.

        >>> ReferenceData(Path("t.jsonl"), "r1", "train", "0", "fraud", "3",
        ...               dataset="train@d1", context="training").source
        'mlflow:models:/fraud/3 run=r1 dataset=train@d1'
        """
        head = (f"mlflow:models:/{self.model_name}/{self.model_version} run={self.run_id}"
                if self.model_name else f"mlflow:runs:/{self.run_id}")
        if self.artifact is not None:
            return f"{head} artifact={self.artifact}"
        return f"{head} dataset={self.dataset}"


def _resolve(client: Any, target: RunTarget) -> tuple[Any, Any | None]:
    """(the run, the model version or None) that ``target`` names."""
    from mlflow.exceptions import MlflowException

    version = None
    run_id = target.run_id
    if target.model_name is not None:
        name = target.model_name
        what = (f"model {name!r} alias {target.alias!r}" if target.alias
                else f"model {name!r} version {target.model_version}")
        try:
            version = (client.get_model_version_by_alias(name, target.alias) if target.alias
                       else client.get_model_version(name, target.model_version))
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"{what} not found in the registry") from None
            raise
        run_id = version.run_id or None
        model_id = getattr(version, "model_id", None)
        if not run_id and model_id:
            run_id = client.get_logged_model(model_id).source_run_id or None
        if not run_id:
            raise RegistryError(f"{what} has no source run (source {version.source}): "
                                "name its training run instead (RUN_ID or runs:/RUN_ID)")
    elif target.logged_model is not None:
        try:
            run_id = client.get_logged_model(target.logged_model).source_run_id or None
        except MlflowException as exc:
            if _not_found(exc):
                raise RegistryError(f"logged model {target.logged_model!r} not found") from None
            raise
        if not run_id:
            raise RegistryError(f"logged model {target.logged_model!r} has no source run")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if _not_found(exc):
            via = "" if target.run_id else f" (the source run of {target.uri})"
            raise RegistryError(f"run {run_id!r} not found{via}") from None
        raise
    return run, version


def _is_data_file(name: str) -> bool:
    return urllib.parse.urlparse(name).path.lower().endswith(DATA_SUFFIXES)


def _local_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI or a plain path; None for other schemes."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        return Path(uri)  # a path (or a Windows drive path)
    return None


def _one_file(local: Path, what: str) -> Path:
    """``local`` if a file; the only data file of a directory; else an error naming them."""
    if local.is_file():
        return local
    found = sorted(p for p in local.rglob("*") if p.is_file() and _is_data_file(p.name))
    if len(found) == 1:
        return found[0]
    names = ", ".join(str(p.relative_to(local)) for p in found[:5]) or "none"
    raise RegistryError(f"{what} is a directory with {len(found)} JSON/Parquet files "
                        f"({names}): name one file")


def _download_artifact(client: Any, uri: str, run_id: str, artifact: str,
                       dst_dir: Path) -> Path:
    from mlflow.exceptions import MlflowException

    mlflow = _mlflow()
    try:
        if "://" in artifact:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=artifact, dst_path=str(dst_dir), tracking_uri=uri)
        else:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact.strip("/"), dst_path=str(dst_dir),
                tracking_uri=uri)
    except (MlflowException, OSError) as exc:
        parent = artifact.strip("/").rpartition("/")[0] or None
        try:
            listing = [f.path for f in client.list_artifacts(run_id, parent)][:10]
        except (MlflowException, OSError):
            listing = []
        there = f"; {parent or 'its root'} holds: {', '.join(listing)}" if listing else ""
        raise RegistryError(f"cannot download artifact {artifact!r} of run {run_id}: "
                            f"{_first_line(exc)}{there}") from exc
    return _one_file(Path(local), f"artifact {artifact!r}")


def _context(dataset_input: Any) -> str:
    return next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")


def _dataset_file(run: Any, dst_dir: Path) -> tuple[Path, str, str]:
    """(local file, "NAME@DIGEST", context) of the run's first usable dataset input."""
    from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource

    mlflow = _mlflow()
    inputs = list(run.inputs.dataset_inputs) if run.inputs is not None else []
    skipped: list[str] = []
    for item in sorted(inputs, key=lambda i: _context(i) != TRAINING):  # stable: logged order
        dataset, context = item.dataset, _context(item) or "none"
        label = f"dataset {dataset.name!r} (context {context}, {dataset.source_type} source)"
        try:
            source = mlflow.data.get_source(item)
        except Exception as exc:  # a source type this install cannot parse
            skipped.append(f"{label}: {_first_line(exc)}")
            continue
        if not isinstance(source, FileSystemDatasetSource):
            skipped.append(f"{label}: not a file")
            continue
        if not _is_data_file(source.uri):
            skipped.append(f"{label}: {source.uri} is not JSON, JSON lines or Parquet")
            continue
        local = _local_path(source.uri)
        if local is not None:
            if not local.is_file():
                skipped.append(f"{label}: {local} is not a file on this machine")
                continue
        else:
            try:
                local = _one_file(Path(source.load(dst_path=str(dst_dir / "dataset"))), label)
            except Exception as exc:  # the store's client: credentials, network, missing
                skipped.append(f"{label}: cannot download {source.uri}: {_first_line(exc)}")
                continue
        return local, f"{dataset.name}@{dataset.digest}", context
    why = "; ".join(skipped) if skipped else "it logged no dataset inputs"
    raise RegistryError(f"run {run.info.run_id} has no reference file: {why}. Log the events "
                        "as an artifact (JSON lines or Parquet) and name it")


def find_reference(
    run_uri: str,
    *,
    dst_dir: str | Path,
    tracking_uri: str | None = None,
    artifact: str | None = None,
) -> ReferenceData:
    """The reference events of the model ``run_uri`` names, as a local file, with metadata.

    Downloads go under ``dst_dir`` (the caller's temporary directory); a dataset whose
    source is a local file is used where it is. Raises :class:`RegistryError`.
    """
    try:
        target = parse_run_uri(run_uri)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    client, uri = _client(tracking_uri)
    with _errors(uri):
        run, version = _resolve(client, target)
        run_id = run.info.run_id
        if artifact is None and target.artifact_path and _is_data_file(target.artifact_path):
            artifact = target.artifact_path
        if run.info.lifecycle_stage == "deleted":
            raise RegistryError(f"run {run_id} is deleted")
        dataset = context = None
        if artifact is not None:
            path = _download_artifact(client, uri, run_id, artifact, Path(dst_dir))
        else:
            path, dataset, context = _dataset_file(run, Path(dst_dir))
        reference = ReferenceData(
            path=path, run_id=run_id, run_name=run.info.run_name or "",
            experiment_id=run.info.experiment_id,
            model_name=version.name if version is not None else None,
            model_version=str(version.version) if version is not None else None,
            dataset=dataset, context=context, artifact=artifact,
            run_tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            version_tags=dict(version.tags) if version is not None else {},
        )
    log.info("MLflow reference %s (%s): run tags %s, version tags %s", reference.source,
             reference.path, reference.run_tags, reference.version_tags)
    return reference


def baseline_from_mlflow(
    run_uri: str,
    spec: Any,
    series: str | Mapping[str, str],
    *,
    dst_dir: str | Path,
    tracking_uri: str | None = None,
    artifact: str | None = None,
    start: float | None = None,
    end: float | None = None,
    created_by: str = "",
    prices: Any = None,
) -> tuple[Any, ReferenceData]:
    """(unstored :class:`~pipeline.scoring.baselines.Baseline`, its reference) of a model in
    MLflow: :func:`find_reference`, then ``build_from_file`` with ``source`` set to
    :attr:`ReferenceData.source`. ``spec`` is a ``MonitorSpec``, ``prices`` the price table.
    Raises :class:`RegistryError` and ``BaselineError``."""
    import msgspec

    from pipeline.scoring.baseline_files import build_from_file

    reference = find_reference(run_uri, dst_dir=dst_dir, tracking_uri=tracking_uri,
                               artifact=artifact)
    built = build_from_file(reference.path, spec, series, start=start, end=end,
                            created_by=created_by, prices=prices)
    return msgspec.structs.replace(built, source=reference.source), reference
