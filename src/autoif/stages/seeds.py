"""Stage `seeds`: the hand-written atomic instructions the run starts from.

The paper's 36 seeds (or the user's file), optionally sampled down by `seeds.limit`, plus, when
enabled, autoif's built-in verified library: instructions that come with functions and test cases
we wrote, so a supervision model too weak to write functions (the embedded one) still feeds
stage 2. Library records carry their `functions` and `cases`; `verifiers` hands them to crossval
as generations, so they pass the same cross-validation as everything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from ..data import load_seed_instructions
from ..records import Instruction, Record
from ..rundir import SEEDS
from .base import Context, Stage


class SeedsStage(Stage[Record]):
    name = "seeds"
    output = SEEDS.name
    input = None
    output_type = Instruction
    sharded = False
    # llm.backend, llm.model: the built-in library's `auto` follows whether the model is the embedded one.
    reads = ("seeds", "seed", "llm.backend", "llm.model")

    def key_inputs(self, config):
        # The seed file's and the library's content change the output as much as the config does:
        # a library whose phrasings or parameters changed must not resume on the old instructions.
        cfg = config.seeds
        content: dict[str, object] = {"seeds": load_seed_instructions(cfg.file)}
        if cfg.library_enabled(config.llm):
            from .library import build_library

            content["library"] = [
                [e.id, e.instruction, list(e.functions), e.cases]
                for e in build_library(config.seed, per_constraint=cfg.library_per_constraint)
            ]
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def run(self, records: list[Record], ctx: Context) -> Iterable[Instruction]:
        cfg = ctx.config.seeds
        seeds = load_seed_instructions(cfg.file)
        chosen = list(range(len(seeds)))
        if cfg.limit is not None and cfg.limit < len(seeds):
            chosen = sorted(ctx.rng("seeds.limit").sample(chosen, cfg.limit))
        for i in chosen:
            yield Instruction(id=f"seed-{i:03d}", text=seeds[i], source="seed")
        if cfg.library_enabled(ctx.config.llm):
            from .library import build_library

            library = build_library(ctx.config.seed, per_constraint=cfg.library_per_constraint)
            if cfg.library_limit is not None and cfg.library_limit < len(library):
                picked = set(ctx.rng("seeds.library_limit").sample(range(len(library)), cfg.library_limit))
                library = [e for i, e in enumerate(library) if i in picked]
            for entry in library:
                yield Instruction(
                    id=f"lib-{entry.id}",
                    text=entry.instruction,
                    source="builtin",
                    constraint=entry.constraint,
                    functions=list(entry.functions),
                    cases=list(entry.cases),
                )
