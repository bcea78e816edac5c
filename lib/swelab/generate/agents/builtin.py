"""The two reference predictors: gold (replays the gold patch) and empty (the no-patch baseline)."""

from __future__ import annotations

from swelab.generate.agents.base import AttemptContext, AttemptOutcome
from swelab.generate.agents.exceptions import Progress, Submitted, outcome_for


class GoldAgent:
    """The harness's self-check and upper bound: anything below 100 % here is a harness fault."""

    mode = "builtin"

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        return outcome_for(Submitted(), Progress(model_patch=instance["patch"]))


class EmptyAgent:
    """Submits nothing: the tests still run unpatched, so this measures what passes by itself."""

    mode = "builtin"

    def run(self, instance: dict, ctx: AttemptContext) -> AttemptOutcome:
        return outcome_for(Submitted(), Progress(model_patch=""))
