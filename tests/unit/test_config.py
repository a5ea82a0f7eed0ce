"""Settings: defaults, file, environment, errors that name file and line, masked secrets."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_settings


def test_defaults_use_embedded_store_under_home(tmp_path):
    settings = load_settings(environ={"INFERWATCH_HOME": str(tmp_path)})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.partitions == 6
    assert settings.clickhouse_dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert settings.embedded


def test_short_and_nested_env_vars_override_the_file(tmp_path):
    file = tmp_path / "iw.toml"
    file.write_text('[kafka]\nbootstrap_servers = "file:9092"\n[worker]\nsink_batch_size = 7\n')
    settings = load_settings(file, environ={
        "INFERWATCH_KAFKA": "env:9092",
        "INFERWATCH_CLICKHOUSE": "http://ch:8123",
        "INFERWATCH_WORKER__ROLES": "sink",
        "INFERWATCH_TOPICS__PARTITIONS": "12",
    })
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.worker.sink_batch_size == 7  # from the file, untouched by env
    assert settings.worker.roles == ["sink"]
    assert settings.topics.partitions == 12
    assert not settings.embedded


def test_toml_syntax_error_names_file_and_line(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text('[kafka]\nclient_id = "x"\nbootstrap_servers = \n')
    with pytest.raises(ConfigError, match=r"bad\.toml.*line 3"):
        load_settings(file, environ={})


def test_wrong_type_names_file_line_and_field(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text('home = "x"\n\n[topics]\nevents = "e"\npartitions = "six"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:5: Expected `int`, got `str` - at "
                                          r"`\$\.topics\.partitions`"):
        load_settings(file, environ={})


def test_unknown_key_is_an_error_with_its_line(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text('[worker]\nsink_batch_size = 10\nsink_bacth_seconds = 2\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:3: .*unknown field `sink_bacth_seconds`"):
        load_settings(file, environ={})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="INFERWATCH_TOPICS__PARTITIONS"):
        load_settings(environ={"INFERWATCH_TOPICS__PARTITIONS": "zero"})


def test_describe_masks_secrets_and_dsn_passwords():
    settings = load_settings(environ={
        "INFERWATCH_KAFKA__SASL_PASSWORD": "hunter2",
        "INFERWATCH_CLICKHOUSE": "https://svc:s3cret@ch.example:8443/db",
    })
    text = str(settings.describe())
    assert "hunter2" not in text and "s3cret" not in text
    assert settings.describe()["kafka"]["sasl_password"] == "***"
    assert "https://svc:***@ch.example:8443/db" in text


def test_mappings_come_from_one_variable_and_replace_the_default() -> None:
    from pipeline.config import ConfigError, load_settings

    s = load_settings(environ={"INFERWATCH_OTLP__TOPICS": "a.spans=otlp_proto, b=otlp_json",
                               "INFERWATCH_DRIFT__THRESHOLDS": "psi=0.3"})
    assert s.otlp.topics == {"a.spans": "otlp_proto", "b": "otlp_json"}
    assert s.drift.thresholds == {"psi": 0.3}
    with pytest.raises(ConfigError, match=r"INFERWATCH_OTLP__TOPICS\).*zipkin"):
        load_settings(environ={"INFERWATCH_OTLP__TOPICS": "a=zipkin"})


def test_an_error_in_the_second_receiver_table_names_its_line(tmp_path) -> None:
    from pipeline.config import ConfigError, load_settings

    file = tmp_path / "inferwatch.toml"
    text = ('[alerts]\nrules = "x"\n\n[[alerts.receivers]]\nname = "ok"\nkind = "webhook"\n'
            'urls = ["http://a"]\n\n[[alerts.receivers]]\nname = "pager"\n'
            'kind = "alertmanager"\nurls = ["http://b"]\nmatchers = [\'severity=~"(x"\']\n')
    file.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{file}:9: receiver 'pager'"):
        load_settings(file, environ={})
    file.write_text(text.replace('"alertmanager"', '"pagerduty"'))
    with pytest.raises(ConfigError, match=rf"^{file}:11: .*pagerduty"):
        load_settings(file, environ={})


def test_a_feature_dropped_at_ingest_cannot_be_monitored_for_drift(tmp_path) -> None:
    """Monitoring it would fail silently (live events never carry it) and a baseline of it
    would keep the values privacy says not to keep: refused, naming where it was set."""
    file = tmp_path / "inferwatch.toml"
    file.write_text('[privacy]\ndrop_features = ["zip"]\n\n[drift]\n'
                    'numeric_features = ["age"]\ncategorical_features = ["zip", "lang"]\n')
    with pytest.raises(ConfigError, match=rf"^{file}:6: drift.categorical_features names "
                                          r"'zip', which privacy.drop_features drops"):
        load_settings(file, environ={})
    with pytest.raises(ConfigError, match=r"^environment \(INFERWATCH_DRIFT__NUMERIC_FEATURES\)"
                                          r": drift.numeric_features names 'age'"):
        load_settings(environ={"INFERWATCH_PRIVACY__DROP_FEATURES": "age",
                               "INFERWATCH_DRIFT__NUMERIC_FEATURES": "age,tokens"})
    kept = load_settings(environ={"INFERWATCH_PRIVACY__DROP_FEATURES": "zip",
                                  "INFERWATCH_DRIFT__NUMERIC_FEATURES": "age"})
    assert kept.drift.numeric_features == ["age"]
