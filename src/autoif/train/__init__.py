"""Training on autoif's data, thin over Hugging Face TRL: `autoif train sft|dpo|online-dpo|grpo`.

Each trainer is one module with its settings class (defaults: the paper's hyper-parameters) and a
`train(settings) -> Path` returning the saved model directory. Imported only when used (torch, TRL).
"""

from __future__ import annotations

import importlib

# command -> "module:SettingsClass"; each module has `train(settings)`.
TRAINERS: dict[str, str] = {
    "sft": "autoif.train.sft:SFTSettings",
    "dpo": "autoif.train.dpo:DPOSettings",
    "online-dpo": "autoif.train.online_dpo:OnlineDPOSettings",
    "grpo": "autoif.train.grpo:GRPOSettings",
}


def trainer(name: str):
    """(SettingsClass, train function) of a trainer."""
    module, cls = TRAINERS[name].split(":")
    mod = importlib.import_module(module)
    return getattr(mod, cls), mod.train
