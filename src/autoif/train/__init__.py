"""Training on autoif's data, thin over Hugging Face TRL: `autoif train sft|dpo|online-dpo|grpo`.

Each trainer is one module with its settings class (defaults: the paper's hyper-parameters) and a
`train(settings) -> Path` returning the saved model directory. Imported only when used (torch, TRL).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import Registry

# command -> "module:SettingsClass"; each module has `train(settings)`.
TRAINERS = Registry(
    "trainer",
    {
        "sft": "autoif.train.sft:SFTSettings",
        "dpo": "autoif.train.dpo:DPOSettings",
        "online-dpo": "autoif.train.online_dpo:OnlineDPOSettings",
        "grpo": "autoif.train.grpo:GRPOSettings",
    },
)


def trainer(name: str) -> tuple[type, Callable[[Any], Path]]:
    """(SettingsClass, train function) of a trainer."""
    settings_class = TRAINERS.load(name)
    return settings_class, sys.modules[settings_class.__module__].train
