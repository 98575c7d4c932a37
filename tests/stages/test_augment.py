"""Stage augment: parsing, cleaning, filtering, normalization, ids, deduplication, and the stage.

The stage's LLM calls replay answers of the embedded SmolLM2-135M-Instruct to our own prompt,
recorded once with transformers for exactly the prompts this test builds (seed 42, the first three
paper seeds, k = 2, temperature 1.0), through `ReplayBackend` (see test_backtranslate.py). The
official release's self-instruct output (`augment_instructions.txt`, a strong model's) tests the
removal of seeds repeated back.
"""

import re

import pytest
from test_backtranslate import FIXTURES, make_context

from autoif.data import load_seed_instructions
from autoif.records import Instruction
from autoif.stages import augment as augment_mod
from autoif.stages.augment import (
    AugmentStage,
    Candidate,
    clean,
    deduplicate,
    instruction_id,
    normalize,
    rejection,
    signature,
)
from autoif.stages.base import Context
from autoif.stages.parsing import parse_bullet_lines
from replay import ReplayBackend


def new(*texts):
    return [Candidate(t, "seed-000") for t in texts]


def kept_texts(candidates, existing, threshold=90.0):
    kept, dropped = deduplicate(new(*candidates), existing, threshold)
    return [c.text for c in kept], {k: v for k, v in dropped.items() if v}


# ------------------------------------------------------------------------------ pure functions
def test_normalize_ignores_case_quotes_spacing_and_end_punctuation():
    assert normalize("  Use only words with “double”   letters. ") == 'use only words with "double" letters'
    assert normalize("Answer with the letter ‘B’!") == normalize("answer with the letter 'B'")
    assert normalize('"Use only palindromes."') == normalize("“Use only palindromes”") == "use only palindromes"


def test_ids_depend_on_the_text_alone():
    a = instruction_id("Answer in fewer than 50 words.")
    assert re.fullmatch(r"aug-[0-9a-f]{12}", a)
    assert a == instruction_id("answer in  fewer than 50 words") == instruction_id("Answer in fewer than 50 words")
    assert a != instruction_id("Answer in fewer than 40 words.")


@pytest.mark.parametrize(
    "item,expected",
    [
        ("**Instruction 3:** Answer in lowercase letters only.", "Answer in lowercase letters only."),
        ("New instruction: End your answer with the word 'Done'", "End your answer with the word 'Done'"),
        ("Use   exactly __two__ paragraphs", "Use exactly two paragraphs"),
        ("2 Bristol Road DT834", "2 Bristol Road DT834"),
    ],
)
def test_clean(item, expected):
    assert clean(item) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Answer with at most 50 words", None),
        ("Wrap your entire answer in double quotation marks", None),
        ("BLAIR ROSE", "too_short"),
        ("Use " + "very " * 40 + "short words", "too_long"),
        ("Can you answer using only words of one syllable?", "not_instruction"),
        ("Formatting constraints for the answer:", "not_instruction"),
        ("Here are five new instructions", "not_instruction"),
        ("Translate your answer into Spanish", "not_format"),
        ("Write in a formal and persuasive tone", "not_format"),
    ],
)
def test_rejection(text, reason):
    assert rejection(text) == reason


def test_recorded_answer_parses_to_its_bullet_lines():
    answer = (
        "Prefix: 'P\nRhyme Set: ABCD\nHow to compose the answer:\n"
        "- An answer must contain less than 2 sentences\n- It is the only answer this line speaks\n\n"
        "Employs only words with double letters\n"
    )
    items = [clean(i) for i in parse_bullet_lines(answer)]  # (part of a SmolLM2 answer)
    assert items == ["An answer must contain less than 2 sentences", "It is the only answer this line speaks"]
    assert [rejection(i) for i in items] == [None, None]


def test_signature_holds_parameters_and_direction():
    assert signature("Write exactly three paragraphs.") == signature("write exactly 3 paragraphs")
    assert signature("Answer with words that begin with the letter 'B'") != signature(
        "Answer with words that begin with the letter 'C'"
    )
    assert signature("Start your answer with the word Hello") != signature("End your answer with the word Hello")
    assert signature("Don't use any commas") == signature("Do not use any commas") != signature("Use commas")


# ------------------------------------------------------------------------------- deduplication
@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"AutoIF fixtures not found at {FIXTURES}")
def test_seeds_repeated_back_are_removed():
    seeds = load_seed_instructions()
    official = (FIXTURES / "augment_instructions.txt").read_text().splitlines()
    assert official and all(line in seeds for line in official)  # the release's output repeats seeds
    echoed = [line.upper() + "." for line in official] + ["“" + official[0] + "”"]
    kept, dropped = kept_texts(official + echoed, seeds)
    assert kept == [] and dropped == {"repeats_seed": len(official) * 2 + 1}


def test_exact_and_near_duplicates_among_new_instructions():
    kept, dropped = kept_texts(
        ["Answer in all lowercase letters", "answer in all lowercase letters.", "Answer in lowercase letters only"],
        ["Use only palindromes"],
    )
    assert kept == ["Answer in all lowercase letters"]
    assert dropped == {"duplicate": 1, "near_duplicate": 1}


def test_near_duplicate_threshold():
    # token-set similarity of these two: 93.1
    pair = ["Answer in all lowercase letters", "Answer in lowercase letters only"]
    assert kept_texts(pair, [], threshold=90)[0] == pair[:1]
    assert kept_texts(pair, [], threshold=95)[0] == pair
    assert kept_texts(pair[1:], pair[:1], threshold=90) == ([], {"repeats_seed": 1})


def test_a_dropped_instruction_removes_no_later_one():
    # A ~ B (93), B ~ C (100), A !~ C (88): B goes as A's near-duplicate, C stays.
    a, b, c = "Answer in all lowercase letters", "Answer in lowercase letters only", "Answer only in lowercase"
    assert kept_texts([a, b, c], []) == ([a, c], {"near_duplicate": 1})


def test_different_parameters_are_different_instructions():
    texts = [
        "Write exactly 3 paragraphs",
        "Write exactly 5 paragraphs",
        "Answer with words that begin with the letter 'B'",
        "Answer with words that begin with the letter 'C'",
        "Start your response with the phrase 'Is there anything else?'",
        "End your response with the phrase 'Is there anything else?'",
        "Use no words containing the letter 'E'",
        "Use only words containing the letter 'E'",
    ]
    assert kept_texts(texts, []) == (texts, {})


def test_blocks_give_the_same_result(monkeypatch):
    texts = [
        "Answer in all lowercase letters",
        "Answer in lowercase letters only",
        "Answer only in lowercase",
        "Write exactly 3 paragraphs",
        "write exactly three paragraphs.",
        "Use only palindromes!",
        "Answer entirely in lowercase letters",
        "Answer entirely in lowercase",
    ]
    whole = kept_texts(texts, ["Use only palindromes"])
    monkeypatch.setattr(augment_mod, "ROWS_PER_BLOCK", 2)
    assert kept_texts(texts, ["Use only palindromes"]) == whole


# ------------------------------------------------------------------------------------ the stage
SEED_TEXTS = load_seed_instructions()[:3]
BUILTIN = Instruction(
    id="lib-word_count_max-0",
    text="Answer in fewer than 40 words.",
    source="builtin",
    constraint="word_count_max",
    functions=["def evaluate(response):\n    return len(response.split()) < 40"],
    cases=[{"input": "Short answer.", "output": True}, {"input": "word " * 50, "output": False}],
)

# SmolLM2-135M-Instruct's answers (k = 2 samples per seed, temperature 1.0), in seed order.
SMOLLM2_ANSWERS = [
    [
        "Instructions\n- Choose words that begin with the letter 'B'",
        "Output Feedback: (1, 1)\n\nI would love to say, You have the right idea.\nI would love to say anoth"
        "er, I would love to die more carefully.\n\n---FYI\nServes #1: I would greet my colleagues on their "
        "wedding night with chocolate and grapes.\nServes #5: I would pick your car to your backyard. I Da"
        "n\naringLast: To clarify prior statements: A position taken is not so immanace.\nServes #1: I woul"
        "d love to cancel the trip with you up to May 5.\nServes #1: I would give you a day's drink if it "
        "is pudding.\nServes #5: I would leave friends in my shoes if they beat your mother.\n\nWe Serve We "
        'Love, We Himorable After Pets Are Called.\nWofre Mac\n\nWords: "A man\'s blog follows a brown cat."\n'
        "Serves #1:",
    ],
    [
        "Once you edit flight tickets, whether it represents real money or cheques, depends on the scale."
        " Consider it again your personal one - one and only one scale equates to you, so this is not jus"
        "t citing an example; you're actually being equal to your setattr creation. Your personal experie"
        "nce shows that the ability to differentiate can be the biggest thing in the human world; it's ab"
        "out sequencing is Highly Advanced. And breaking it down; for all the stuff that had never been g"
        "iven holds, every part that is created makes the earth to have life's creation. This is how you "
        "have been; this is possible without anything; this is awesome. And it is Liquid, and in all dang"
        "er stars may You make all your gifts sacrifice early mother here yours morrow Life and your conn"
        "ection what you, the One who is You.\n\n🎈Is there a way to craft an email in this format without m"
        "aking emotions of womens blow? 🎉🎭 When people write,",
        "Always explain all the classifications with no substitutions to avoid a grammatical error.\n\nHere"
        ' is result "Always explain all the classifications with no substitutions to avoid a grammatical '
        'error."',
    ],
    [
        "What's your favorite item on my website? That's already more than the content I'm expecting. Wat"
        "ch out for the gifts that may come with them, you know. You went way outside your rema's abiliti"
        "es.\n\nNon-true instructions: \nOne of my fam. I'm on the box of your favorite toy, remember that l"
        "ollipop only has one kind of fruit.\n\nNon-sensitive instructions: \nTo help you send your package,"
        " go to www.youtube.com/s\nOK, I just ordered a new item. Can I show you some new designs you've h"
        "ere….\n\nLabels:\n- no crazy post links\nyou can't eat my pizza\ngives you your last pos\none type of "
        "text is funny, people don't get it so be extra hisded...\nturn off the lights when you want to go"
        "\nspinnin' eiere\nsweet coccah\nfinally the words she",
        "Here is a complete recipe for your private needs:\n\n* Listen to your heraldic voice no matter the"
        ' subject." * Say vowels twice',
    ],
]


def stage_inputs():
    return [Instruction(id=f"seed-{i:03d}", text=t, source="seed") for i, t in enumerate(SEED_TEXTS)] + [BUILTIN]


def recorded_llm(ctx, records):
    seeds = [r for r in records if r.source == "seed"]
    prompts = [AugmentStage.prompt(s, seeds, ctx) for s in seeds]
    return ReplayBackend(dict(zip(prompts, SMOLLM2_ANSWERS)))


def run_augment(tmp_path, *sets, llm=None):
    records = stage_inputs()
    ctx = make_context(tmp_path, None, "augment.k=2", "augment.temperature=1.0", *sets)
    ctx = Context(ctx.config, llm=llm if llm is not None else recorded_llm(ctx, records))
    return records, list(AugmentStage().run(records, ctx)), ctx


def test_stage_outputs_inputs_then_new_instructions(tmp_path):
    records, out, ctx = run_augment(tmp_path)
    assert out[: len(records)] == records  # seeds and the built-in library untouched, extra fields kept
    assert out[len(records) - 1].functions == BUILTIN.functions
    added = out[len(records) :]
    # What the 135M model gives: 3 of 6 answers have no list at all, one item paraphrases the seed it
    # was shown ("Choose words that begin with the letter 'B'", 90.7 similar), and two lines of
    # nonsense pass (crossval is what stops instructions no function can check).
    assert [(r.text, r.seed_id) for r in added] == [
        ("no crazy post links", "seed-002"),
        ('Listen to your heraldic voice no matter the subject." * Say vowels twice', "seed-002"),
    ]
    assert all(r.source == "augmented" and r.id == instruction_id(r.text) for r in added)
    assert ctx.counts == {
        "augmented_unparsable": 3,
        "augmented_candidates": 3,
        "augmented_dropped:repeats_seed": 1,
        "augmented_kept": 2,
    }
    requests = ctx.llm.requests
    assert [r.n for r in requests] == [2, 2, 2]
    assert {(r.sampling.seed, r.sampling.temperature) for r in requests} == {(ctx.config.seed, 1.0)}
    for seed, request in zip(SEED_TEXTS, requests):
        assert f'"{seed}"' in request.messages[-1]["content"]


def test_stage_is_deterministic_for_a_seed(tmp_path):
    _, first, _ = run_augment(tmp_path)
    _, again, _ = run_augment(tmp_path)
    assert first == again
    # The seeds shown beside each one are drawn with the run's seed.
    seeds = [Instruction(id=f"seed-{i:03d}", text=t, source="seed") for i, t in enumerate(load_seed_instructions())]
    prompt = AugmentStage.prompt(seeds[0], seeds, make_context(tmp_path, None))
    assert prompt == AugmentStage.prompt(seeds[0], seeds, make_context(tmp_path, None))
    assert prompt != AugmentStage.prompt(seeds[0], seeds, make_context(tmp_path, None, "seed=7"))


def test_disabled_passes_inputs_through(tmp_path):
    llm = ReplayBackend({})
    records, out, _ = run_augment(tmp_path, "augment.enabled=false", llm=llm)
    assert out == records and llm.requests == []


def test_llm_errors_are_counted(tmp_path):
    records, out, ctx = run_augment(tmp_path, llm=ReplayBackend({}))
    assert out == records
    assert ctx.counts["llm_error"] == 6 and ctx.counts["augmented_kept"] == 0
