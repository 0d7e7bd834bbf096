"""The short chaos suite: ~100 gated actions on real processes, each fault once.

The full run (1,000 actions) is ``python -m chaos``; this one keeps the same checks in
the test suite: nothing released is lost, nothing runs twice, nothing runs without a
release, nothing refused runs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from chaos.faults import KINDS
from chaos.report import MUST_BE_ZERO
from chaos.suite import ChaosConfig, run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_short_chaos_run_loses_and_repeats_nothing(tmp_path: Path) -> None:
    output = tmp_path / "chaos.json"
    result = run(ChaosConfig(actions=100, quick=True, database="sqlite", output=output, workdir=tmp_path / "chaos"))
    where = f"logs in {tmp_path / 'chaos'}; result {json.dumps(result.as_json()['figures'])}"
    for name in MUST_BE_ZERO:
        assert result.figures[name] == 0, f"{name} = {result.figures[name]}: {result.examples.get(name)}; {where}"
    assert result.settled, where
    assert result.figures["submitted"] == result.figures["acknowledged"] == 100, where
    assert result.figures["succeeded_not_executed"] == 0 and result.figures["late_hits"] == 0, where
    assert result.audit_chain_ok, where
    injected = Counter(str(event["fault"]).split(":")[0] for event in result.faults if not event["error"])
    assert set(injected) == set(KINDS) and all(count == 1 for count in injected.values()), result.faults
    # Every kind of answer happened and each led where it should.
    assert set(result.by_plan) == {"approve", "deny", "expire", "deadline", "forge", "cancel"}
    assert set(result.by_plan["deny"]) == {"rejected"} and set(result.by_plan["cancel"]) == {"cancelled"}
    assert result.figures["executed"] > 40, where
    assert json.loads(output.read_text())["passed"] is True
