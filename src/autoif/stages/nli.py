"""Natural language inference over (premise, hypothesis) pairs: the judge of back-translations.

Two models behind one method, `classify(pairs) -> [label | None]`, labels from
`parsing.NLI_LABELS` ("entailment", "neutral", "contradiction"):
- `hf`: a Hugging Face sequence-classification model (the paper's mDeBERTa XNLI model by
  default, or any hub id or local path), its label order read from `config.id2label`;
- `llm`: the supervision LLM as a 3-way judge, for runs that cannot reach the hub. A judgement
  that names no label gives None.

`backend: auto` (when the config offers it) takes the LLM when the supervision model is the
embedded one, which implies an offline run, and the Hugging Face model otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..config import Config
from ..errors import AutoifError, require
from ..records import NLILabel
from .parsing import NLI_LABELS, label_of, parse_nli_label

Pair = tuple[str, str]


def labels_from_id2label(id2label: dict, model: str) -> dict[int, NLILabel]:
    """Class index -> NLI label; an AutoifError unless the classes are exactly the three labels."""
    labels = {int(i): label_of(str(name)) for i, name in id2label.items()}
    if sorted(labels.values(), key=str) != sorted(NLI_LABELS):
        names = ", ".join(f"{i}: {id2label[i]}" for i in sorted(id2label, key=int))
        raise AutoifError(
            f"NLI model '{model}' does not name the classes entailment, neutral and contradiction "
            f"in its config.id2label ({names})"
        )
    return {i: label for i, label in labels.items() if label is not None}  # none is None: checked above


class NLIModel(ABC):
    @classmethod
    @abstractmethod
    def from_config(cls, config: Config, llm) -> NLIModel:
        """Build from the whole config; `llm` is the run's LLM backend (used by the llm judge only)."""

    @abstractmethod
    def classify(self, pairs: Sequence[Pair]) -> list[NLILabel | None]:
        """The label of each (premise, hypothesis) pair, in order; None where there is none."""


class HFNLI(NLIModel):
    """A sequence-classification model over (premise, hypothesis), in batches, without gradients."""

    def __init__(self, model: str, batch_size: int = 32, device: str = "auto") -> None:
        transformers = require("transformers", "local", "the NLI model")
        import torch

        self.name, self.batch_size = model, batch_size
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(model)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AutoifError(
                f"cannot load NLI model '{model}': {first} (set backtranslate.nli.model to a "
                f"local path, or backtranslate.nli.backend=llm)"
            ) from None
        self.labels = labels_from_id2label(self.model.config.id2label, model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        # Tokenizers saved without a length limit report a huge one; the position table is the real one.
        limits = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        self.max_length = min(n for n in limits if isinstance(n, int) and 0 < n < 1_000_000)

    @classmethod
    def from_config(cls, config: Config, llm) -> HFNLI:
        nli = config.backtranslate.nli
        # The device local models run on; the NLI model is small enough to share it with the LLM.
        return cls(nli.model, batch_size=nli.batch_size, device=config.llm.device)

    def classify(self, pairs: Sequence[Pair]) -> list[NLILabel | None]:
        import torch

        labels: list[NLILabel | None] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            inputs = self.tokenizer(
                [p for p, _ in batch],
                [h for _, h in batch],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                logits = self.model(**inputs.to(self.device)).logits
            labels.extend(self.labels[i] for i in logits.argmax(dim=-1).tolist())
        return labels


class LLMNLI(NLIModel):
    """The LLM as a 3-way judge (prompt `nli`), read with `parsing.parse_nli_label`."""

    def __init__(self, llm, max_tokens: int = 256, seed: int | None = None) -> None:
        self.llm, self.max_tokens, self.seed = llm, max_tokens, seed

    @classmethod
    def from_config(cls, config: Config, llm) -> LLMNLI:
        return cls(llm, max_tokens=config.backtranslate.max_tokens, seed=config.seed)

    def classify(self, pairs: Sequence[Pair]) -> list[NLILabel | None]:
        from ..llm import Request
        from ..prompts import render

        requests = [
            Request.user(
                render("nli", premise=p, hypothesis=h), temperature=0.0, max_tokens=self.max_tokens, seed=self.seed
            )
            for p, h in pairs
        ]
        answers = self.llm.generate(requests, desc="nli") if requests else []
        return [None if a[0].error else parse_nli_label(a[0]) for a in answers]


NLI_MODELS: dict[str, type[NLIModel]] = {"hf": HFNLI, "llm": LLMNLI}


def nli_backend(config: Config) -> str:
    """The NLI backend a run uses: the configured one, with `auto` resolved."""
    backend = config.backtranslate.nli.backend
    if backend == "auto":
        return "llm" if config.llm.is_embedded() else "hf"
    return backend


def make_nli(config: Config, llm=None) -> NLIModel:
    return NLI_MODELS[nli_backend(config)].from_config(config, llm)
