"""``inferwatch quality compare`` on the module's embedded store (no worker owns it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.quality import EXIT_WORSE
from tests.unit.views.test_versions import HOSTILE, T0, canary, fate, inference, store_rows

RANGE = ["--since", str(T0 - 60), "--until", str(T0 + 3600)]


@pytest.fixture(scope="module")
def home(store: Any) -> str:
    events, fates = canary()
    hostile = [inference(f"q{i}", HOSTILE, "v'1\\", T0 + i) for i in range(3)]
    store_rows(store.client, [*events, *hostile],
               [*fates, *(fate(f"qf{i}", e, "label", "cat") for i, e in enumerate(hostile))])
    return str(store.settings.home_path)


def run(home: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["quality", "compare", *args],
                              env={"INFERWATCH_HOME": home, **(env or {})})


def test_a_worse_candidate_prints_every_metric_and_exits_3(home) -> None:
    out = run(home, "--model", "canary", "--baseline", "v1", "--candidate", "v2", *RANGE)
    assert out.exit_code == EXIT_WORSE, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("canary: candidate v2 vs baseline v1, inferences between ")
    assert lines[1].split()[:5] == ["metric", "baseline", "candidate", "difference", "95%"]
    table = {line.split()[0]: line.split() for line in lines[2:7]}
    assert table["error_rate"][1:4] == ["1.00%", "5.00%", "+4.00pp"]
    assert table["error_rate"][-3:] == ["1000", "1000", "worse"]
    assert table["accuracy"][1:3] == ["90.00%", "66.67%"] and table["accuracy"][-1] == "worse"
    assert table["latency_ms"][-1] == "no_difference"
    assert table["satisfaction"][-3:] == ["300", "300", "worse"]
    assert lines[7] == "worse: error_rate, accuracy, satisfaction, thumbs_down_rate"


def test_json_and_a_twin_exit_0(home) -> None:
    out = run(home, "--model", "canary", "--baseline", "v1", "--candidate", "v3", *RANGE,
              "--format", "json", "--level", "0.9")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert (report["model"], report["baseline"], report["candidate"], report["level"]) == (
        "canary", "v1", "v3", 0.9)
    assert report["worse"] == []
    assert [m["verdict"] for m in report["metrics"]] == ["no_difference"] * 5
    assert report["metrics"][0]["n_baseline"] == 1000


def test_margins_and_min_samples_change_the_verdicts(home) -> None:
    out = run(home, "--model", "canary", "--baseline", "v1", "--candidate", "v2", *RANGE,
              "--format", "json", "--margin", "error_rate=0.2", "--margin", "accuracy=0.5",
              "--margin", "satisfaction=0.5", "--margin", "thumbs_down_rate=0.5")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["worse"] == []
    out = run(home, "--model", "canary", "--baseline", "v1", "--candidate", "v2", *RANGE,
              "--min-samples", "5000")
    assert out.exit_code == 0, out.output
    assert out.output.count("insufficient_data") == 5


def test_a_hostile_model_name_is_compared_like_any_other(home) -> None:
    out = run(home, "--model", HOSTILE, "--baseline", "v'1\\", "--candidate", "v2", *RANGE)
    assert out.exit_code == 1
    assert f"model {HOSTILE!r}: no inference or feedback of version 'v2'" in out.output
    assert "versions there: v'1\\" in out.output


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "canary", "--baseline", "v1", "--candidate", "v9"],
     "versions there: v1, v2, v3"),
    (["--model", "nobody", "--baseline", "v1", "--candidate", "v2"],
     "Error: no inference or feedback of model 'nobody' between "),
    (["--model", "canary", "--baseline", "v1", "--candidate", "v2", "--operation", "chat"],
     "operation='chat'"),
])
def test_an_unknown_model_or_version_is_one_line(home, args, message) -> None:
    out = run(home, *args, *RANGE)
    assert out.exit_code == 1
    assert message in out.output and len(out.output.strip().splitlines()) == 1


def test_no_store_or_no_tables_is_a_one_line_error(home, tmp_path) -> None:
    out = run(str(tmp_path), "--model", "canary", "--baseline", "v1", "--candidate", "v2")
    assert out.exit_code == 1
    assert out.output.startswith("Error: no embedded store at ")
    out = run(home, "--model", "canary", "--baseline", "v1", "--candidate", "v2",
              env={"INFERWATCH_CLICKHOUSE__DATABASE": "nowhere"})
    assert out.exit_code == 1
    assert out.output.strip() == ("Error: no events or feedback table in ClickHouse database "
                                  "'nowhere': run `inferwatch migrate` or a worker first")


@pytest.mark.parametrize(("args", "message"), [
    (["--candidate", "v1"], "is the same version as --baseline"),
    (["--candidate", "v2", "--since", "yesterday"], "invalid time 'yesterday'"),
    (["--candidate", "v2", "--since", "1h", "--until", "2h"], "is not after --since"),
    (["--candidate", "v2", "--label", "tenant=a"], "'tenant' is not a series label"),
    (["--candidate", "v2", "--label", "tenant"], "'tenant' is not NAME=VALUE"),
    (["--candidate", "v2", "--margin", "p99=1"], "no metric 'p99'"),
    (["--candidate", "v2", "--margin", "latency_ms=-1"], "a margin must be a number >= 0"),
])
def test_usage_errors(home, args, message) -> None:
    out = run(home, "--model", "canary", "--baseline", "v1", *args)
    assert out.exit_code == 2, out.output
    assert message in out.output


def test_help_says_how_to_gate_on_it() -> None:
    out = CliRunner().invoke(cli, ["quality", "compare", "--help"])
    assert out.exit_code == 0
    assert "3  at least one metric is worse" in out.output
    assert "quality" in CliRunner().invoke(cli, ["--help"]).output
