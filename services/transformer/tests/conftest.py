"""Prints the juice conformance score at the end of a run, so a plain ``pytest`` shows where it stands."""

from __future__ import annotations

import pytest

JUICE_MATCH = "juice_match"  # recorded by test_juice_conformance.test_juice_case


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    results = [
        bool(value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "") == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == JUICE_MATCH
    ]
    if results:
        terminalreporter.write_line(f"juice cases: {sum(results)}/{len(results)} pass")
