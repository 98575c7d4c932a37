"""A backend that replays recorded real LLM outputs (STYLE.md: fine for a stage's logic).

Looked up by the last message of a request, served through the real `Backend.generate` (cache
keys, stats, per-sample errors). A prompt with no recording gets the per-sample error a backend
reports for a request it cannot serve. Each capability is also tested against a real model.
"""

from __future__ import annotations

from autoif.llm import Backend, Completion


class ReplayBackend(Backend):
    kind = "replay"

    def __init__(self, recordings: dict[str, list[str]], model: str = "recorded"):
        super().__init__(model)
        self.recordings = recordings
        self.requests = []  # every request that reached the backend (cache misses)

    @property
    def prompts(self) -> list[str]:
        return [r.messages[-1]["content"] for r in self.requests]

    @classmethod
    def from_config(cls, llm, cache=None, paths=None):
        raise TypeError("a ReplayBackend is built from recordings, not from a config")

    def _run(self, jobs, emit):
        for index, job in enumerate(jobs):
            self.requests.append(job.request)
            recorded = self.recordings.get(job.request.messages[-1]["content"], [])
            for sample in job.samples:
                emit(
                    index,
                    sample,
                    Completion(recorded[sample]) if sample < len(recorded) else Completion("", error="not_recorded"),
                )
