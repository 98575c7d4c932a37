"""The stages of an AutoIF run, in run order: the registry that the pipeline, the CLI and the report read.

Each name maps to its "module:Class", imported only when the stage is loaded. `load_stage(name)`
builds one; an unknown name is an AutoifError that suggests the closest stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .base import Stage

STAGES = Registry(
    "stage",
    {
        "seeds": "autoif.stages.seeds:SeedsStage",
        "augment": "autoif.stages.augment:AugmentStage",
        "verifiers": "autoif.stages.verifiers:VerifiersStage",
        "crossval": "autoif.stages.crossval:CrossvalStage",
        "backtranslate": "autoif.stages.backtranslate:BacktranslateStage",
        "compose": "autoif.stages.compose:ComposeStage",
        "queries": "autoif.stages.queries:QueriesStage",
        "responses": "autoif.stages.responses:ResponsesStage",
        "verify": "autoif.stages.verify:VerifyStage",
        "score": "autoif.stages.score:ScoreStage",
        "export": "autoif.stages.export:ExportStage",
    },
)


def load_stage(name: str) -> Stage:
    """A new instance of the stage registered as `name`."""
    return STAGES.load(name)()


def default_stages() -> list[Stage]:
    """Every registered stage, in run order: what `Pipeline` runs unless given its own list."""
    return [load_stage(name) for name in STAGES]


__all__ = ["STAGES", "default_stages", "load_stage"]
