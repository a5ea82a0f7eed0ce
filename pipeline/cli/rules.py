"""``inferwatch rules``: validate alert rule files and run their tests."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import cli


@cli.group()
def rules() -> None:
    """Alert rules (YAML): validate them and run their unit tests."""


@rules.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def rules_check(paths: tuple[Path, ...]) -> None:
    """Validate rule files or directories; print file:line:col: problem for each error."""
    from pipeline.alerting.rules import check

    problems = check(list(paths))
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the rules")
    click.echo(f"rules OK: {', '.join(str(p) for p in paths)}")


@rules.command("test")
@click.argument("path", type=click.Path(path_type=Path))
def rules_test(path: Path) -> None:
    """Run promtool-style rule tests (input windows, eval times, expected alerts)."""
    from pipeline.alerting.ruletest import run_rule_tests

    result = run_rule_tests(path)
    click.echo(result.report())
    if not result.passed:
        raise click.ClickException("rule tests failed")
