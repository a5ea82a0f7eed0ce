"""deploy/compose, deploy/kubernetes and deploy/docker, checked without a container engine.

Every file is parsed, and what a running cluster would find out the hard way is checked
against the code instead:

- every ``INFERWATCH_*`` variable a container gets is a real setting (resolved the way
  :func:`pipeline.config._env_overrides` resolves it, short forms included), and the
  environment of each InferWatch container loads (:func:`pipeline.config.load_settings`);
- ports, probe paths and scrape targets match what the worker serves (the paths
  ``pipeline/telemetry.py`` routes, the ``telemetry.port`` in force for that container);
- commands are the package's entry point (``[project.scripts]``) with subcommands and
  options the click CLI accepts;
- kustomizations list only files that exist, and every manifest is listed;
- KEDA's consumer groups and topics are the ones the runtime's stages use;
- Prometheus, Alertmanager and Grafana read files that exist, through the mounts;
- the example Secret holds placeholders only, and every alert of the pipeline's own
  Prometheus rules has a playbook in docs/operations.md.

``kubectl kustomize`` and ``promtool``, where installed, check what their own parsers say.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import msgspec
import pytest
import yaml

from pipeline.alerting.rules import check as check_rules
from pipeline.cli import cli
from pipeline.config import SECRET_FIELDS, ConfigError, Settings, _env_overrides, load_settings
from tests.unit.test_prometheus_rules import needs_promtool

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
KUBE = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PROMETHEUS_RULES = DEPLOY / "prometheus" / "rules" / "inferwatch.rules.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

IMAGE = "inferwatch"  # the image name deploy/docker/Dockerfile is built as
PLACEHOLDER = "CHANGE-ME"  # the only value a committed Secret may hold for a secret
CLICKHOUSE_HTTP_PORT = 8123  # the ClickHouse server's HTTP interface (the image's default)
ALERTMANAGER_PORT = 9093  # Alertmanager's web port (its default)
PROMETHEUS_PORT = 9090
NOT_SETTINGS = {"INFERWATCH_CONFIG"}  # the TOML file load_settings and --config read
# kafka.sasl_mechanism → the kafka scaler's `sasl` (keda.sh/docs/2.17/scalers/apache-kafka)
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
             "SCRAM-SHA-512": "scram_sha512"}


# ---------------------------------------------------------------------- what the code says
def served_paths() -> set[str]:
    """The paths the worker's telemetry endpoint routes (pipeline/telemetry.py)."""
    source = (ROOT / "pipeline" / "telemetry.py").read_text()
    return set(re.findall(r'add_get\("([^"]+)"', source))


SERVED = served_paths()

# The process role's runners, as pipeline/runtime/worker.py names them (each one's group is
# <app_id>-<name>), whether a configuration runs them, and the topics each one consumes.
RUNNERS: dict[str, tuple[Any, Any]] = {
    "stage1": (lambda s: True, lambda t: {t.events, t.resources}),
    "stage2": (lambda s: True, lambda t: {t.partials}),
    "otlp": (lambda s: s.otlp.enabled, lambda t: set()),  # the spans topics: otlp.topics
    "quality-intake": (lambda s: s.quality.enabled, lambda t: {t.events, t.feedback}),
    "quality-join": (lambda s: s.quality.enabled, lambda t: {t.joins}),
    "quality": (lambda s: s.quality.enabled, lambda t: {t.outcomes}),
    "alerts": (lambda s: bool(s.alerts.rules), lambda t: {t.metrics}),
}


def runner_names() -> set[str]:
    """The names run_process gives its KafkaRunners (their third argument)."""
    tree = ast.parse((ROOT / "pipeline" / "runtime" / "worker.py").read_text())
    return {
        node.args[2].value for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "KafkaRunner"
        and len(node.args) >= 3 and isinstance(node.args[2], ast.Constant)
    }


def rules_job() -> str:
    """The job label the pipeline's own Prometheus rules select (``up{job="..."}``)."""
    jobs = set(re.findall(r'job="([^"]+)"', PROMETHEUS_RULES.read_text()))
    assert len(jobs) == 1, f"{PROMETHEUS_RULES}: expected one job name, found {jobs}"
    return jobs.pop()


def _leaf(t: Any) -> bool:
    """Can an environment variable set a field of this type (not a section, not a table)?"""
    inspect = msgspec.inspect
    if isinstance(t, inspect.UnionType):
        return all(_leaf(o) for o in t.types if not isinstance(o, inspect.NoneType))
    if isinstance(t, inspect.StructType):
        return False
    if isinstance(t, inspect.ListType):
        return not isinstance(t.item_type, inspect.StructType)
    return True


def setting_of(name: str) -> tuple[str, ...] | None:
    """The settings path an environment variable sets, resolved as load_settings resolves
    it (``INFERWATCH_KAFKA`` → ``kafka.bootstrap_servers``); None if it sets nothing."""
    node: Any = _env_overrides({name: "0"})
    path: list[str] = []
    while type(node) is dict and len(node) == 1:  # a mapping setting's value is a subclass
        key, node = next(iter(node.items()))
        path.append(key)
    if not path:
        return None
    info: Any = msgspec.inspect.type_info(Settings)
    for part in path:
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        field = next((f for f in info.fields if f.encode_name == part), None)
        if field is None:
            return None
        info = field.type
    return tuple(path) if _leaf(info) else None


def env_problems(names: Any, where: str) -> list[str]:
    """Each ``INFERWATCH_*`` name that sets no setting, with the file it is in."""
    allowed = NOT_SETTINGS | {Settings().privacy.key_env}  # the SDK's pseudonym key
    return [f"{where}: {name} is not an InferWatch setting (pipeline/config.py)"
            for name in names
            if name.upper().startswith("INFERWATCH_") and name not in allowed
            and setting_of(name) is None]


def settings_for(environ: Mapping[str, str], where: str) -> Settings:
    try:
        return load_settings(None, environ)
    except ConfigError as exc:
        pytest.fail(f"{where}: its environment does not load: {exc}")


def parse_command(argv: list[str], where: str) -> tuple[list[str], dict[str, Any]]:
    """``inferwatch ARGS`` through the click CLI without running it: (command path, the
    last command's parameters); an unknown command or option fails naming ``where``."""
    scripts = PYPROJECT["project"]["scripts"]
    assert argv and argv[0] in scripts, (
        f"{where}: runs {argv[:1]}, not the package's entry point {sorted(scripts)}")
    assert scripts[argv[0]] == "pipeline.launcher:main"
    command: click.Command = cli
    names: list[str] = []
    args = list(argv[1:])
    parent = None
    while True:
        try:
            ctx = command.make_context(argv[0] if not names else names[-1], args,
                                       parent=parent)
        except click.ClickException as exc:
            pytest.fail(f"{where}: `{shlex.join(argv)}`: {exc.format_message()}")
        if not isinstance(command, click.Group):
            return names, ctx.params
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        assert rest, f"{where}: `{shlex.join(argv)}` names no command"
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"{where}: no command in {rest}"
        names.append(name)
        command, parent = sub, ctx


def test_setting_of_resolves_names_as_the_settings_do() -> None:
    assert setting_of("INFERWATCH_KAFKA") == ("kafka", "bootstrap_servers")
    assert setting_of("INFERWATCH_CLICKHOUSE") == ("clickhouse", "dsn")
    assert setting_of("INFERWATCH_HOME") == ("home",)
    assert setting_of("INFERWATCH_WORKER__INSTANCE_ID") == ("worker", "instance_id")
    assert setting_of("INFERWATCH_ALERTS__RECEIVERS[0]__NAME") is None
    for wrong in ("INFERWATCH_WORKER", "INFERWATCH_WORKER__", "INFERWATCH_CLICKHOUSE_DSN",
                  "INFERWATCH_TELEMETRY__PORTT", "INFERWATCH_ALERTS__RECEIVERS",
                  "INFERWATCH_KAFKA__BOOTSTRAP_SERVERS__X", "OTHER_VARIABLE"):
        assert setting_of(wrong) is None, wrong
    info = msgspec.inspect.type_info(Settings)
    for section in info.fields:  # every field of every section, by its documented name
        if isinstance(section.type, msgspec.inspect.StructType):
            for field in section.type.fields:
                name = f"INFERWATCH_{section.encode_name}__{field.encode_name}".upper()
                expected = (section.encode_name, field.encode_name)
                assert setting_of(name) == (expected if _leaf(field.type) else None), name
    assert env_problems(["INFERWATCH_LOG_FORMAT", "INFERWATCH_CONFIG", "PATH"], "x") == [
        "x: INFERWATCH_LOG_FORMAT is not an InferWatch setting (pipeline/config.py)"]


# ---------------------------------------------------------------------- the Dockerfile
@functools.cache
def dockerfile() -> dict[str, list[str]]:
    """Instruction → its arguments (continuation lines joined), in order."""
    out: dict[str, list[str]] = {}
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


@functools.cache
def image_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    stages = re.split(r"(?m)^FROM ", re.sub(r"\\\n", " ", DOCKERFILE.read_text()))
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.strip().startswith("ENV "):
            for item in shlex.split(line.strip()[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def image_argv(cmd: list[str] | None) -> list[str]:
    """The process a container of the image runs: ENTRYPOINT + (its command or CMD)."""
    found = dockerfile()
    entry = yaml.safe_load(found["ENTRYPOINT"][-1])
    default = yaml.safe_load(found["CMD"][-1]) if "CMD" in found else []
    return [*entry, *(default if cmd is None else cmd)]


def test_the_image_runs_the_entry_point_with_the_worker_extra() -> None:
    found = dockerfile()
    scripts = PYPROJECT["project"]["scripts"]
    assert yaml.safe_load(found["ENTRYPOINT"][-1]) == ["inferwatch"]
    assert "inferwatch" in scripts
    installs = [run for run in found["RUN"] if "pip install" in run]
    extras = {m for run in installs for m in re.findall(r"\.\[([\w,-]+)\]", run)}
    assert extras == {"worker"}, f"the image installs extras {extras}, not worker"
    assert "worker" in PYPROJECT["project"]["optional-dependencies"]
    parse_command(image_argv(None), "deploy/docker/Dockerfile CMD")
    assert str(Settings().telemetry.port) in " ".join(found["EXPOSE"])
    assert not env_problems(image_env(), "deploy/docker/Dockerfile ENV")
    settings = settings_for(image_env(), "deploy/docker/Dockerfile ENV")
    assert settings.telemetry.bind == "0.0.0.0", "the image's endpoint must be reachable"
    for copy in found["COPY"]:
        if "--from" not in copy:
            *sources, _ = shlex.split(copy)
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}: missing"


def test_the_build_context_keeps_what_the_image_needs() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "pipeline", "schemas"} <= kept


# ---------------------------------------------------------------------- compose
@functools.cache
def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")


def interpolate(value: Any, where: str) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``, with the
    values of .env.example; a required variable .env.example lacks fails."""
    if isinstance(value, dict):
        return {k: interpolate(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, where) for v in value]
    if not isinstance(value, str):
        return value
    known = env_example()

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, rest = match.groups()
        if name in known:
            return known[name]
        assert kind is None or "?" not in kind, (
            f"{where}: compose requires ${{{name}}}, which .env.example does not list")
        return rest or ""

    return _VAR.sub(one, value)


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def ours(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == IMAGE


OUR_SERVICES = sorted(name for name, s in services().items() if ours(s))


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def mounts(name: str) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of a service's bind mounts."""
    out = []
    for volume in services()[name].get("volumes") or []:
        source, target, *_ = volume.split(":") if isinstance(volume, str) else (
            volume["source"], volume["target"])
        if source.startswith((".", "/")):
            out.append(((COMPOSE_DIR / source).resolve(), PurePosixPath(target)))
    return out


def host_path(name: str, inside: str) -> Path | None:
    """Where a path inside a service's container comes from on this checkout."""
    target = PurePosixPath(inside)
    for source, mount in sorted(mounts(name), key=lambda m: -len(m[1].parts)):
        if target == mount or mount in target.parents:
            return source / target.relative_to(mount)
    return None


def our_container(name: str) -> tuple[Settings, dict[str, str], list[str], dict[str, Any]]:
    """Settings, environment, command path and parameters of an InferWatch service."""
    service = services()[name]
    where = f"deploy/compose/compose.yaml: service {name}"
    raw = service_env(service)
    environ = {**image_env(), **interpolate(raw, where)}
    command = service.get("command")
    command = shlex.split(command) if isinstance(command, str) else command
    entry = service.get("entrypoint")
    argv = ([*([entry] if isinstance(entry, str) else entry), *(command or [])] if entry
            else image_argv(command))
    path, params = parse_command(argv, where)
    return settings_for(environ, where), raw, path, params


def worker_roles(settings: Settings, params: Mapping[str, Any]) -> set[str]:
    roles = params.get("roles")
    return {r.strip() for r in roles.split(",")} if roles else set(settings.worker.roles)


def test_compose_parses_and_names_our_services() -> None:
    doc = compose()
    assert {"kafka", "clickhouse", "process", "sink", "prometheus", "alertmanager",
            "grafana"} <= set(doc["services"])
    assert {"process", "sink"} <= set(OUR_SERVICES)
    declared = set(doc.get("volumes") or {})
    for name, service in doc["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"service {name}: mount {source} missing"
            else:
                assert source in declared, f"service {name}: volume {source} not declared"
        for dependency in service.get("depends_on") or {}:
            assert dependency in doc["services"], f"service {name} depends on {dependency}"


def test_compose_image_is_the_package_version_built_from_our_dockerfile() -> None:
    version = PYPROJECT["project"]["version"]
    for name in OUR_SERVICES:
        service = services()[name]
        assert interpolate(service["image"], name) == f"{IMAGE}:{version}", name
        build = service["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_secrets_come_from_an_uncommitted_env_file() -> None:
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required <= set(env_example()), required - set(env_example())
    assert all("change-me" in value for value in env_example().values())


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_compose_environment_names_real_settings(name: str) -> None:
    raw = service_env(services()[name])
    assert not env_problems(raw, f"deploy/compose/compose.yaml: service {name}")
    our_container(name)  # and it loads, and the command parses


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_compose_ports_and_health_checks_match_what_the_container_serves(name: str) -> None:
    settings, _, path, params = our_container(name)
    service = services()[name]
    check = " ".join(service.get("healthcheck", {}).get("test", []))
    published = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports") or []}
    if path == ["worker"]:
        assert settings.telemetry.enabled and settings.telemetry.bind in {"0.0.0.0", "::"}
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
        assert url, f"service {name}: no health check on the telemetry endpoint"
        assert int(url.group(1)) == settings.telemetry.port, name
        assert url.group(2) in SERVED, f"service {name} checks {url.group(2)}: not served"
        # docs/operations.md: the telemetry endpoint has no authentication and "publishes
        # nothing in compose"; Prometheus scrapes it on the compose network
        assert not published, f"{name} publishes {published}"
    elif path == ["ui"]:
        assert published == {params["port"]}, f"service {name}: dashboard on {params['port']}"
        assert str(params["port"]) in check
        assert params["bind"] == "0.0.0.0"
    else:
        pytest.fail(f"service {name} runs {path}: no check written for it")


def test_compose_workers_reach_kafka_clickhouse_and_alertmanager() -> None:
    all_services = services()
    kafka_env = service_env(all_services["kafka"])
    advertised = {item.split("://", 1)[1] for item in
                  kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    clickhouse_env = interpolate(service_env(all_services["clickhouse"]), "clickhouse")
    for name in OUR_SERVICES:
        settings, _, path, params = our_container(name)
        assert settings.kafka.bootstrap_servers in advertised, name
        if path == ["worker"] and "sink" not in worker_roles(settings, params):
            assert "INFERWATCH_CLICKHOUSE" not in service_env(all_services[name]), (
                f"service {name}: the processing role needs no store credentials")
            continue
        dsn = urlsplit(settings.clickhouse_dsn)
        assert not settings.embedded, f"service {name}: embedded store in compose"
        assert dsn.hostname == "clickhouse" and dsn.port == CLICKHOUSE_HTTP_PORT, name
        assert all_services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server")
        assert (dsn.username, dsn.password) == (clickhouse_env["CLICKHOUSE_USER"],
                                                clickhouse_env["CLICKHOUSE_PASSWORD"]), name
        for url in settings.alerts.alertmanager_urls:
            parts = urlsplit(url)
            assert (parts.hostname, parts.port) == ("alertmanager", ALERTMANAGER_PORT), name


def test_compose_files_the_settings_name_are_mounted() -> None:
    for name in OUR_SERVICES:
        settings, _, _, _ = our_container(name)
        named = [settings.alerts.rules, settings.pricing.table, settings.kafka.ssl_cafile,
                 settings.query.tls_certfile]
        for inside in filter(None, named):
            found = host_path(name, inside)
            assert found is not None and found.exists(), f"service {name}: {inside} unmounted"
        if settings.alerts.rules:
            rules = host_path(name, settings.alerts.rules)
            assert not check_rules(rules), [str(p) for p in check_rules(rules)]


def test_compose_static_membership_ids_are_unique_per_worker() -> None:
    seen: dict[str, str] = {}
    for name in OUR_SERVICES:
        settings, _, path, _ = our_container(name)
        instance = settings.worker.instance_id
        if path == ["worker"] and instance:
            replicas = int(interpolate(str(services()[name].get("deploy", {}).get(
                "replicas", 1)), name))
            assert replicas == 1, f"service {name}: {replicas} replicas share id {instance}"
            assert instance not in seen, f"{name} and {seen.get(instance)} share {instance}"
            seen[instance] = name


def prometheus_config() -> tuple[dict[str, Any], Path]:
    args = services()["prometheus"]["command"]
    inside = next(a.split("=", 1)[1] for a in args if a.startswith("--config.file="))
    path = host_path("prometheus", inside)
    assert path is not None and path.is_file(), f"prometheus reads {inside}: not mounted"
    return yaml.safe_load(path.read_text()), path


def test_compose_prometheus_scrapes_every_worker_and_loads_the_rules() -> None:
    config, _ = prometheus_config()
    assert config["rule_files"], "prometheus loads no rule files: the alerts never fire"
    for rule_file in config["rule_files"]:
        found = host_path("prometheus", rule_file)
        assert found is not None and found.is_file(), f"rule file {rule_file} not mounted"
        assert found.resolve() == PROMETHEUS_RULES.resolve()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs[rules_job()]  # the rules select this job: a renamed job silences them
    assert job.get("metrics_path", "/metrics") == "/metrics" and "/metrics" in SERVED
    targets: dict[str, int] = {}
    for sd in job.get("dns_sd_configs", []):
        targets |= {host: sd["port"] for host in sd["names"]}
    for sd in job.get("static_configs", []):
        targets |= {t.rsplit(":", 1)[0]: int(t.rsplit(":", 1)[1]) for t in sd["targets"]}
    workers = {name for name in OUR_SERVICES if our_container(name)[2] == ["worker"]}
    assert set(targets) == workers, f"scraped {set(targets)}, workers {workers}"
    for name, port in targets.items():
        assert port == our_container(name)[0].telemetry.port, f"{name} scraped on {port}"
    alerting = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == [f"alertmanager:{ALERTMANAGER_PORT}"]


@needs_promtool
def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    config, _ = prometheus_config()
    config["rule_files"] = [str(host_path("prometheus", f)) for f in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    done = subprocess.run(["promtool", "check", "config", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr


def test_compose_alertmanager_reads_the_repository_config() -> None:
    args = services()["alertmanager"]["command"]
    inside = next(a.split("=", 1)[1] for a in args if a.startswith("--config.file="))
    found = host_path("alertmanager", inside)
    assert found is not None and found.resolve() == DEPLOY / "alertmanager" / "alertmanager.yml"
    assert not any(a.startswith("--web.listen-address") for a in args)


def test_compose_grafana_provisioning_is_mounted_and_its_variables_set() -> None:
    env = service_env(services()["grafana"])
    found = [host_path("grafana", f"/etc/grafana/provisioning/{kind}")
             for kind in ("datasources", "dashboards")]
    directories = [d for d in found if d is not None and d.is_dir()]
    assert len(directories) == 2, f"grafana provisioning not mounted: {found}"
    providers = 0
    for directory in directories:
        files = sorted(directory.glob("*.y*ml"))
        assert files, f"{directory}: nothing for grafana to provision"
        for file in files:
            text = re.sub(r"(?m)(^|\s)#.*", "", file.read_text())  # not in comments
            for var in re.findall(r"\$\{(\w+)\}", text):
                assert var in env, f"{file.name} reads ${{{var}}}: grafana does not set it"
            doc = yaml.safe_load(file.read_text())
            for provider in doc.get("providers", []):
                providers += 1
                dashboards = host_path("grafana", provider["options"]["path"])
                assert dashboards is not None and list(dashboards.glob("*.json")), provider
    assert providers, "no dashboard provider: grafana would show no dashboards"
    assert env["INFERWATCH_CH_HOST"] == "clickhouse" and "clickhouse" in services()
    assert int(env["INFERWATCH_CH_PORT"]) == CLICKHOUSE_HTTP_PORT
    prometheus = urlsplit(env["INFERWATCH_PROMETHEUS_URL"])
    assert (prometheus.hostname, prometheus.port) == ("prometheus", PROMETHEUS_PORT)
    initdb = host_path("clickhouse", "/docker-entrypoint-initdb.d")
    assert initdb is not None and initdb.is_dir()
    scripts = " ".join(f.read_text() for f in sorted(initdb.iterdir()))
    assert f"CREATE USER IF NOT EXISTS {env['INFERWATCH_CH_USER']} " in scripts
    assert env["GF_PLUGINS_PREINSTALL_SYNC"] == "grafana-clickhouse-datasource"


# ---------------------------------------------------------------------- kubernetes
@functools.cache
def kustomization(directory: Path) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return yaml.safe_load((directory / name).read_text())
    pytest.fail(f"{directory}: no kustomization")


def kustomize_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(field, path) of every file a kustomization (and its directories) names."""
    doc = kustomization(directory)
    yield "kustomization", directory / "kustomization.yaml"
    for field in ("resources", "components"):
        for entry in doc.get(field) or []:
            path = directory / entry
            if path.is_dir():
                yield from kustomize_files(path)
            else:
                yield field, path
    for field in ("configMapGenerator", "secretGenerator"):
        for generator in doc.get(field) or []:
            for entry in [*generator.get("envs", []), *generator.get("files", [])]:
                yield field, directory / entry.split("=", 1)[-1]
    for patch in doc.get("patches") or []:
        if "path" in patch:
            yield "patches", directory / patch["path"]


def test_kustomizations_list_only_files_that_exist_and_every_manifest() -> None:
    listed: set[Path] = set()
    roots = [KUBE, *sorted(p.parent for p in (KUBE / "components").glob("*/kustomization.yaml"))]
    for root in roots:
        for field, path in kustomize_files(root):
            assert path.is_file(), f"{root}/kustomization.yaml {field}: {path} does not exist"
            listed.add(path.resolve())
    on_disk = {p.resolve() for p in KUBE.rglob("*") if p.is_file() and p.suffix != ".md"}
    assert on_disk <= listed, f"not in any kustomization: {sorted(on_disk - listed)}"


@functools.cache
def kube_objects() -> list[dict[str, Any]]:
    """Every object of the base and its components, generated ConfigMaps included."""
    out: list[dict[str, Any]] = []
    roots = [KUBE, *sorted(p.parent for p in (KUBE / "components").glob("*/kustomization.yaml"))]
    for root in roots:
        doc = kustomization(root)
        for field, path in kustomize_files(root):
            if field in ("resources", "components") and path.suffix in (".yaml", ".yml") \
                    and path.is_file():  # a missing one fails the kustomization test
                out += [o for o in yaml.safe_load_all(path.read_text()) if o]
        for generator in doc.get("configMapGenerator") or []:
            data: dict[str, str] = {}
            for env in generator.get("envs", []):
                data |= env_file(root / env)
            for entry in generator.get("files", []):
                key, _, file = entry.rpartition("=")
                data[key or Path(file).name] = (root / file).read_text()
            out.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": generator["name"]}, "data": data})
    return out


def generated_file(config_map: str, key: str) -> Path:
    """The file the base's configMapGenerator puts under ``key`` of ``config_map``."""
    for generator in kustomization(KUBE).get("configMapGenerator") or []:
        for entry in generator.get("files", []) if generator["name"] == config_map else []:
            name, _, file = entry.rpartition("=")
            if (name or Path(file).name) == key:
                return KUBE / file
    pytest.fail(f"ConfigMap {config_map} has no file {key}")


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: `{line}` is not KEY=VALUE"
            out[key.strip()] = value
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in kube_objects() if o["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {**by_kind("Deployment"), **by_kind("StatefulSet")}


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{name}/{c['name']}", c) for name, w in workloads().items()
            for c in w["spec"]["template"]["spec"]["containers"]
            if c["image"].split(":")[0] == IMAGE]


CONTAINERS = [name for name, _ in containers()]


def container(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    workload, _ = name.split("/")
    return workloads()[workload], dict(containers())[name]


def container_env(name: str) -> tuple[dict[str, str], list[str]]:
    """The environment a container starts with, and the variable names it was given."""
    workload, spec = container(name)
    maps, secrets = by_kind("ConfigMap"), by_kind("Secret")
    environ = dict(image_env())
    names: list[str] = []
    for source in spec.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            assert ref in maps, f"{name}: envFrom ConfigMap {ref} does not exist"
            data = maps[ref]["data"]
        else:
            ref = source["secretRef"]["name"]
            assert ref in secrets, f"{name}: envFrom Secret {ref} does not exist"
            data = secrets[ref].get("stringData") or {}
        names += list(data)
        environ |= data
    for item in spec.get("env") or []:
        names.append(item["name"])
        if "value" in item:
            environ[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] in secrets, f"{name}: Secret {ref['name']} does not exist"
            data = secrets[ref["name"]].get("stringData") or {}
            assert ref["key"] in data, f"{name}: Secret {ref['name']} has no {ref['key']}"
            environ[item["name"]] = data[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            environ[item["name"]] = maps[ref["name"]]["data"][ref["key"]]
        else:
            field = source["fieldRef"]["fieldPath"]
            environ[item["name"]] = {"metadata.name": f"{workload['metadata']['name']}-0"}[field]
    return environ, names


def kube_container(name: str) -> tuple[Settings, list[str], dict[str, Any]]:
    _, spec = container(name)
    environ, _ = container_env(name)
    argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
    argv = argv if spec.get("command") else image_argv(spec.get("args"))
    path, params = parse_command(argv, f"deploy/kubernetes: {name}")
    return settings_for(environ, f"deploy/kubernetes: {name}"), path, params


def test_kubernetes_files_parse_into_objects() -> None:
    for path in sorted(KUBE.rglob("*.y*ml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
    kinds = {o["kind"] for o in kube_objects()}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "ScaledObject",
            "TriggerAuthentication", "PodDisruptionBudget", "ServiceMonitor"} <= kinds
    assert {"inferwatch-process/worker", "inferwatch-sink/worker"} <= set(CONTAINERS)


def test_kubernetes_configmap_and_secret_keys_are_settings() -> None:
    for kind in ("ConfigMap", "Secret"):
        for name, obj in by_kind(kind).items():
            data = obj.get("data") or obj.get("stringData") or {}
            if name == "inferwatch-rules":
                continue  # a file, not variables
            assert not env_problems(data, f"deploy/kubernetes {kind} {name}")


@pytest.mark.parametrize("name", CONTAINERS)
def test_kubernetes_container_environment_names_real_settings(name: str) -> None:
    _, names = container_env(name)
    assert not env_problems(names, f"deploy/kubernetes: {name}")
    kube_container(name)  # and it loads, and the command parses


@pytest.mark.parametrize("name", CONTAINERS)
def test_kubernetes_ports_and_probes_match_the_telemetry_endpoint(name: str) -> None:
    workload, spec = container(name)
    settings, path, _ = kube_container(name)
    assert path == ["worker"], f"{name} runs {path}"
    telemetry = settings.telemetry
    assert telemetry.enabled and telemetry.bind in {"0.0.0.0", "::"}, (
        f"{name}: telemetry.bind {telemetry.bind} is unreachable for probes and Prometheus")
    ports = {p.get("name"): p["containerPort"] for p in spec["ports"]}
    assert ports.get("metrics") == telemetry.port, f"{name}: ports {ports}"
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                "readinessProbe": "/readyz"}
    for probe, want in expected.items():
        get = spec[probe]["httpGet"]
        assert get["path"] == want and want in SERVED, f"{name} {probe}: {get}"
        port = ports.get(get["port"], get["port"])
        assert port == telemetry.port, f"{name} {probe} on port {get['port']}"
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    assert int(annotations["prometheus.io/port"]) == telemetry.port, name
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", CONTAINERS)
def test_kubernetes_files_the_settings_name_are_mounted(name: str) -> None:
    workload, spec = container(name)
    settings, _, _ = kube_container(name)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounted = {PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in spec["volumeMounts"]}
    home = PurePosixPath(settings.home)
    assert home in mounted and "emptyDir" in mounted[home], (
        f"{name}: INFERWATCH_HOME {home} is no writable volume (root filesystem read-only)")
    maps = by_kind("ConfigMap")
    for inside in filter(None, [settings.alerts.rules, settings.pricing.table]):
        file = PurePosixPath(inside)
        volume = mounted.get(file.parent)
        assert volume is not None and "configMap" in volume, f"{name}: {inside} unmounted"
        data = maps[volume["configMap"]["name"]]["data"]
        assert file.name in data, f"{name}: ConfigMap has no {file.name}"
        if inside == settings.alerts.rules:
            source = generated_file(volume["configMap"]["name"], file.name)
            problems = check_rules(source)
            assert not problems, [str(p) for p in problems]


def test_kubernetes_images_are_the_package_version() -> None:
    images = {i["name"]: i for i in kustomization(KUBE)["images"]}
    assert images[IMAGE]["newTag"] == PYPROJECT["project"]["version"]


def test_kubernetes_services_and_monitor_reach_the_metrics_port() -> None:
    job = rules_job()
    pods = {name: w["spec"]["template"] for name, w in workloads().items()}
    services_ = by_kind("Service")
    for name, service in services_.items():
        selector = service["spec"]["selector"]
        selected = [p for p in pods.values()
                    if selector.items() <= p["metadata"]["labels"].items()]
        assert selected, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in selected:
                (spec,) = [c for c in pod["spec"]["containers"] if c["image"] == IMAGE]
                numbers = {p.get("name"): p["containerPort"] for p in spec["ports"]}
                assert port["targetPort"] in numbers, f"Service {name}: {port}"
        assert service["metadata"]["labels"]["app.kubernetes.io/name"] == job
    for name, monitor in by_kind("ServiceMonitor").items():
        label = monitor["spec"]["jobLabel"]
        matched = [s for s in services_.values() if monitor["spec"]["selector"][
            "matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert matched and all(s["metadata"]["labels"][label] == job for s in matched), name
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics" and "/metrics" in SERVED
            assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
                       for s in matched), f"ServiceMonitor {name}: port {endpoint['port']}"


def test_keda_scales_the_processing_workers_on_the_runtimes_groups() -> None:
    assert runner_names() == set(RUNNERS), (
        f"pipeline/runtime/worker.py runs {runner_names()}: update RUNNERS and keda.yaml")
    auths = by_kind("TriggerAuthentication")
    secrets = by_kind("Secret")
    for name, scaled in by_kind("ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]
        workload = workloads()[target["name"]]
        assert "replicas" not in workload["spec"], f"{target['name']}: replicas fights KEDA"
        (container_name,) = [c for c in CONTAINERS if c.startswith(f"{target['name']}/")]
        settings, path, params = kube_container(container_name)
        assert path == ["worker"] and worker_roles(settings, params) == {"process"}
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= settings.topics.partitions, (
            f"ScaledObject {name}: workers past topics.partitions "
            f"({settings.topics.partitions}) get no partition")
        wanted = {f"{settings.worker.app_id}-{runner}": topics(settings.topics)
                  for runner, (runs, topics) in RUNNERS.items() if runs(settings)}
        groups = {}
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka"
            groups[meta["consumerGroup"]] = meta.get("topic")
            group = meta["consumerGroup"]
            assert group in wanted, f"ScaledObject {name}: no stage consumes as {group}"
            assert meta.get("topic") in wanted[group], f"{group} does not read {meta['topic']}"
            assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
            assert meta["offsetResetPolicy"] == "earliest"
            assert int(meta["lagThreshold"]) > 0
            kafka = settings.kafka
            sasl = KEDA_SASL[kafka.sasl_mechanism] if "SASL" in kafka.security_protocol \
                else "none"
            assert meta.get("sasl", "none") == sasl, f"{group}: KEDA logs in otherwise"
            assert meta.get("tls", "disable") == (
                "enable" if kafka.security_protocol in ("SSL", "SASL_SSL") else "disable")
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
        assert set(groups) == set(wanted), f"groups not scaled on: {set(wanted) - set(groups)}"


def test_kubernetes_static_membership_only_where_ids_are_stable_and_unique() -> None:
    for name in CONTAINERS:
        workload, spec = container(name)
        given = {e["name"]: e for e in spec.get("env") or []}.get(
            "INFERWATCH_WORKER__INSTANCE_ID")
        if given is None:
            continue
        if "value" in given:  # one id for the whole workload: one pod, never two at once
            assert workload["spec"].get("replicas") == 1, name
            assert workload["spec"]["strategy"]["type"] == "Recreate", name
            assert workload["metadata"]["name"] not in {
                s["spec"]["scaleTargetRef"]["name"] for s in by_kind("ScaledObject").values()}
        else:  # from the pod name: stable only in a StatefulSet
            assert workload["kind"] == "StatefulSet", (
                f"{name}: a Deployment's pod names change on every rollout; a static member "
                "that leaves keeps its partitions until its session times out")


def test_kubernetes_sink_runs_alone_while_it_migrates() -> None:
    sinks = []
    for name in CONTAINERS:
        workload, _ = container(name)
        settings, _, params = kube_container(name)
        if "sink" in worker_roles(settings, params):
            sinks.append(name)
            assert workload["spec"]["replicas"] == 1, name
            assert workload["spec"]["strategy"]["type"] == "Recreate", (
                f"{name}: a new sink migrates on start; no other sink may write meanwhile")
    assert sinks, "no container runs the sink role: nothing stores the events"


def test_kubernetes_disruption_budgets_select_workers() -> None:
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads().values()]
    for name, budget in by_kind("PodDisruptionBudget").items():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= labels.items() for labels in pods), name
        assert "minAvailable" not in budget["spec"] or budget["spec"]["minAvailable"] == 0


def test_the_example_secret_holds_placeholders_only() -> None:
    for name, secret in by_kind("Secret").items():
        for key, value in (secret.get("stringData") or {}).items():
            path = setting_of(key)
            if path and path[-1] in SECRET_FIELDS:
                assert value == PLACEHOLDER, f"Secret {name}: {key} is not {PLACEHOLDER}"
            password = urlsplit(value).password if "://" in value else None
            if password is not None:
                assert password == PLACEHOLDER, f"Secret {name}: {key} holds a password"
        assert not secret.get("data"), f"Secret {name}: use stringData placeholders"
    assert PLACEHOLDER in (KUBE / "secret.example.yaml").read_text().split("\n")[0]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_builds_the_base() -> None:
    done = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    built = [o for o in yaml.safe_load_all(done.stdout) if o]
    namespaced = [o for o in built if o["kind"] != "Namespace"]
    assert all(o["metadata"]["namespace"] == "inferwatch" for o in namespaced)
    config = next(o["metadata"]["name"] for o in built if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("inferwatch-config-"))
    for workload in (o for o in built if o["kind"] == "Deployment"):
        (spec,) = workload["spec"]["template"]["spec"]["containers"]
        assert spec["image"] == f"registry.example.com/{IMAGE}:{PYPROJECT['project']['version']}"
        assert {"configMapRef": {"name": config}} in spec["envFrom"]


# ---------------------------------------------------------------------- the operations guide
def test_every_pipeline_alert_has_a_playbook() -> None:
    rules = yaml.safe_load(PROMETHEUS_RULES.read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    guide = OPERATIONS.read_text()
    headings = set(re.findall(r"(?m)^### `?(\w+)`?", guide))
    missing = [a for a in alerts if a not in headings]
    assert not missing, f"docs/operations.md has no playbook (### heading) for {missing}"
