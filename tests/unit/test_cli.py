"""The command line, run in-process (no broker): rules, schema export, config, errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


def test_rules_check_accepts_the_example_and_names_file_line_for_errors(tmp_path):
    ok = run("rules", "check", str(ROOT / "deploy/rules/example.rules.yml"))
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.rules.yml"
    bad.write_text("rules:\n  - name: slow\n    expr: p99_latency_ms >\n")
    out = run("rules", "check", str(bad))
    assert out.exit_code == 1
    assert f"{bad}:3:" in out.output


def test_rules_test_passes_shipped_tests_and_fails_on_missing_file(tmp_path):
    ok = run("rules", "test", str(ROOT / "deploy/rules/example.tests.yml"))
    assert ok.exit_code == 0, ok.output
    missing = run("rules", "test", str(tmp_path / "nope.tests.yml"))
    assert missing.exit_code == 1 and "no such file" in missing.output


def test_schema_export_writes_every_contract(tmp_path):
    out = run("schema", "export", str(tmp_path))
    assert out.exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "InferenceEvent.schema.json", "FeedbackEvent.schema.json", "WindowMetrics.schema.json",
        "AlertEvent.schema.json"}


def test_bad_config_file_is_a_clear_error(tmp_path):
    file = tmp_path / "iw.toml"
    file.write_text("[topics]\npartitions = 0\n")
    out = CliRunner().invoke(cli, ["--config", str(file), "config", "show"], env={})
    assert out.exit_code == 1
    assert f"{file}:2:" in out.output and "partitions" in out.output


def test_config_show_masks_secrets():
    out = run("config", "show", env={"INFERWATCH_KAFKA__SASL_PASSWORD": "hunter2"})
    assert out.exit_code == 0 and "hunter2" not in out.output and '"***"' in out.output


def test_migrate_applies_a_changed_retention_and_says_so(tmp_path):
    """`inferwatch migrate` on the embedded store: migrations first, then a retention
    changed since is applied to the tables' TTLs, and the command names them."""
    env = {"INFERWATCH_HOME": str(tmp_path)}
    first = run("migrate", env=env)
    assert first.exit_code == 0 and "applied: 0001_events" in first.output
    assert "retention updated" not in first.output
    again = run("migrate", env={**env, "INFERWATCH_CLICKHOUSE__RAW_RETENTION_DAYS": "9"})
    assert again.exit_code == 0, again.output
    assert "applied: nothing (up to date)" in again.output
    assert "retention updated: events, feedback, resources\n" in again.output  # the raw tables


def test_worker_refuses_a_bad_price_table_or_rules_file_in_one_line(tmp_path):
    """Checked before the broker is even asked: file and line, no traceback."""
    prices = tmp_path / "prices.toml"
    prices.write_text('version = "x"\n\n[[prices]]\nmodel = "m"\ninput_per_million = "a lot"\n')
    env = {"INFERWATCH_PRICING__TABLE": str(prices), "INFERWATCH_HOME": str(tmp_path / "h"),
           "INFERWATCH_KAFKA": "127.0.0.1:1"}
    out = CliRunner().invoke(cli, ["worker"], env=env)
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert f"{prices}:" in out.output and "input_per_million" in out.output, out.output
    rules = tmp_path / "rules.yml"
    rules.write_text("rules:\n  - name: R\n    severity: warning\n"
                     "    condition: latency_p99_ms >\n")
    env = {**env, "INFERWATCH_PRICING__TABLE": "", "INFERWATCH_ALERTS__RULES": str(rules)}
    out = CliRunner().invoke(cli, ["worker"], env=env)
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert f"{rules}:4" in out.output, out.output
