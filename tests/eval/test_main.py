"""``python -m eval``: dispatch to the benchmark and the speed suites."""

from __future__ import annotations

import pytest

from eval.__main__ import main


def test_without_a_command_the_usage_lists_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m eval {benchmark,speed} [options]")
    assert "  benchmark " in out and "  speed " in out
    assert main(["bench"]) == 2


def test_commands_reach_their_suites(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["speed"]) == 2  # the speed dispatcher's own usage: no suite named
    assert (
        "usage: python -m eval.speed {frontends,backbones,training,input,streaming}"
        in capsys.readouterr().out
    )
    assert main(["benchmark", "--list"]) == 0
    assert "synthetic_genres" in capsys.readouterr().out
