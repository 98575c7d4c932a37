"""The `autoif` command line.

Exit codes: 0 done; 2 bad usage, config or input (one line on stderr; `--debug` adds the
traceback); 1 any other failure, among them requests to an endpoint that failed (one line: how
many failed and why; the work is kept and a rerun retries them). Heavy modules (torch,
transformers, trl) are imported inside the commands that need them, so `autoif --help` starts fast.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Literal

import click

from . import __version__
from .errors import AutoifError
from .failures import WorkFailed

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Group(click.Group):
    """Turns every error into one line and the contract's exit code."""

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except AutoifError as exc:
            _fail(exc, debug, EXIT_USAGE)
        except WorkFailed as exc:  # not bad input: the work is kept, a rerun retries what failed
            click.echo(f"autoif: error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("autoif: interrupted (finished work is kept; rerun to resume)", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, exit 1
            _fail(exc, debug, EXIT_FAILURE)


def _fail(exc: BaseException, debug: bool, code: int) -> None:
    if debug:
        traceback.print_exception(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    prefix = "" if isinstance(exc, AutoifError) else f"{type(exc).__name__}: "
    hint = "" if debug else " (run with --debug for the traceback)" if code == EXIT_FAILURE else ""
    click.echo(f"autoif: error: {prefix}{text}{hint}", err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="autoif")
def cli(debug: bool) -> None:
    """autoif: code-verified instruction-following data from any LLM (AutoIF)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(message)s",
        datefmt="%H:%M:%S",
    )
    # Third-party chatter (HTTP request lines, model loading) is noise unless debugging.
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "openai",
        "urllib3",
        "filelock",
        "transformers",
        "huggingface_hub",
        "datasets",
    ):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def _given(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option naming a path or model given as "" is a mistake, never a request for the default."""
    if value is not None and not value.strip():
        name = param.opts[-1] if isinstance(param, click.Option) else (param.name or "").upper()
        raise AutoifError(f"{name} is empty: give a value (an empty one is never taken for the default)")
    return value


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    callback=_given,
    help="YAML config file (see `autoif config`).",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config key, e.g. --set crossval.preset=official (repeatable).",
)


@cli.command("config")
@config_option
@set_option
def config_cmd(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the full config (defaults, or a file plus overrides) as commented YAML."""
    from .config import dump_default_yaml, load_config

    click.echo(dump_default_yaml(load_config(config_path, overrides)), nl=False)


@cli.command("run")
@config_option
@click.option("-o", "--out", default=None, callback=_given, help="Output directory (overrides paths.out).")
@set_option
@click.option("--only", default=None, metavar="STAGE", help="Run this one stage (its input must exist).")
@click.option("--until", default=None, metavar="STAGE", help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Redo stages even when their outputs are up to date.")
@click.option(
    "--push-to-hub",
    default=None,
    callback=_given,
    metavar="REPO",
    help="Also push the SFT/DPO datasets to this Hugging Face hub repo (needs HF_TOKEN).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where stages run: this machine, or a Ray cluster (RAY_ADDRESS) (overrides executor.kind).",
)
@click.option(
    "--emit-batch",
    default=None,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write the next LLM stage's requests to DIR/<stage>.jsonl (OpenAI batch format, what `vllm run-batch` "
    "reads) and stop.",
)
@click.option(
    "--ingest-batch",
    multiple=True,
    type=click.Path(exists=True),
    metavar="FILE",
    help="Read batch result files (OpenAI/vLLM run-batch output; a directory: its *.jsonl) into the LLM cache, "
    "then run (repeatable).",
)
@click.option(
    "--estimate",
    is_flag=True,
    help="Print each LLM stage's requests, tokens and cost at the configured prices; call nothing.",
)
def run_cmd(
    config_path: str | None,
    out: str | None,
    overrides: tuple[str, ...],
    only: str | None,
    until: str | None,
    force: bool,
    push_to_hub: str | None,
    executor: str | None,
    emit_batch: str | None,
    ingest_batch: tuple[str, ...],
    estimate: bool,
) -> None:
    """Run the AutoIF pipeline: seeds to SFT data and DPO pairs."""
    from .config import load_config
    from .runner import run_pipeline

    config = load_config(config_path, overrides)
    if out:
        config.paths.out = out
    if executor:
        config.executor.kind = executor
    if estimate:
        from rich.console import Console

        from .estimate import estimate as estimate_rows
        from .estimate import estimate_table

        table = estimate_table(estimate_rows(config))
        # Whole even on a narrow terminal (which wraps its lines): a cut number would read as another.
        Console(width=max(Console().width, 160)).print(table)
        return
    run_pipeline(
        config,
        only=only,
        until=until,
        force=force,
        push_to_hub=push_to_hub,
        emit_batch=Path(emit_batch) if emit_batch else None,
        ingest_batch=[Path(p) for p in ingest_batch],
    )


@cli.command("train")
@click.argument("method", type=click.Choice(["sft", "dpo", "online-dpo", "grpo"]))
@config_option
@set_option
@click.option(
    "--model", default=None, callback=_given, help="Model to train: 'embedded', a hub id or a path (overrides model)."
)
@click.option(
    "--data", default=None, callback=_given, help="A run's output directory or a jsonl file (overrides data)."
)
@click.option(
    "--output", default=None, callback=_given, help="Where checkpoints and the final model go (overrides output_dir)."
)
@click.option("--print-config", is_flag=True, help="Print this trainer's settings as commented YAML and stop.")
def train_cmd(
    method: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    model: str | None,
    data: str | None,
    output: str | None,
    print_config: bool,
) -> None:
    """Train on a run's data: sft, dpo (offline), online-dpo (iterative, verifier-scored), grpo."""
    from .config import dump_default_yaml, load_config
    from .train import trainer

    settings_class, train = trainer(method)
    extra = [f"{k}={v}" for k, v in (("model", model), ("data", data), ("output_dir", output)) if v is not None]
    settings = load_config(config_path, list(overrides) + extra, model=settings_class)
    if print_config:
        click.echo(dump_default_yaml(settings), nl=False)
        return
    path = train(settings)
    click.echo(f"autoif: trained model saved to {path}")


@cli.group("eval")
def eval_group() -> None:
    """Benchmarks (IFEval, IFBench, FollowBench, the dev set; MMLU, HumanEval, GSM8K, C-Eval),
    contamination checks, and comparisons."""


def _benchmark_command(name: str) -> None:
    @eval_group.command(name, help=f"Evaluate a model (or a file of responses) on {name}; writes results JSON.")
    @config_option
    @set_option
    @click.option(
        "--model",
        default=None,
        callback=_given,
        help="Model to evaluate (sets llm.model): 'embedded', a hub id, a path.",
    )
    @click.option(
        "--responses",
        default=None,
        type=click.Path(dir_okay=False),
        callback=_given,
        help="Score this jsonl of responses ({id|prompt, response}) instead of generating.",
    )
    @click.option(
        "--data", default=None, callback=_given, help="Benchmark data: a local file, a hub id (default: packaged copy)."
    )
    @click.option("--limit", default=None, type=click.IntRange(min=1), help="A seeded subset of this many prompts.")
    @click.option("--max-tokens", default=None, type=click.IntRange(min=1), help="Longest generated response.")
    @click.option(
        "--judge-set",
        "judge_overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="followbench: the judge's llm settings, e.g. --judge-set backend=openai --judge-set "
        "model=gpt-4o (followbench needs a judge: this or --judge self).",
    )
    @click.option(
        "--judge",
        "judge_name",
        default=None,
        metavar="self",
        help="followbench: '--judge self' lets the evaluated model judge its own answers.",
    )
    @click.option(
        "--num-fewshot",
        default=None,
        type=click.IntRange(min=0),
        help="mmlu, ceval: solved dev-split examples before each question (default 0; 5 needs the dev split).",
    )
    @click.option(
        "--out", default="autoif-eval", show_default=True, callback=_given, help="Where results and responses go."
    )
    def command(
        config_path, overrides, model, responses, data, limit, max_tokens, judge_overrides, judge_name, num_fewshot, out
    ) -> None:
        from .config import LLMConfig, load_config
        from .evals import EvalConfig, run_benchmark

        if judge_name is not None and judge_name != "self":
            raise AutoifError(
                f"--judge takes only 'self' (got '{judge_name}'); name another judge with "
                "--judge-set backend=... --judge-set model=..."
            )
        if judge_name and judge_overrides:
            raise AutoifError("--judge self and --judge-set each name a judge: give one of them")
        config = load_config(config_path, list(overrides) + ([f"llm.model={model}"] if model else []))
        judge: LLMConfig | Literal["self"] | None = "self" if judge_name else None
        if judge_overrides:
            judge = load_config(None, judge_overrides, model=LLMConfig)
        chosen = {"max_tokens": max_tokens, "num_fewshot": num_fewshot}
        settings = EvalConfig(**{k: v for k, v in chosen.items() if v is not None}, judge=judge)
        run_benchmark(name, config, data, responses, limit, Path(out), settings)


for _name in ("ifeval", "ifbench", "followbench", "dev", "mmlu", "humaneval", "gsm8k", "ceval"):
    _benchmark_command(_name)


@eval_group.command("contamination")
@click.argument("run_dir", type=click.Path(file_okay=False), callback=_given)
def contamination_cmd(run_dir: str) -> None:
    """13-gram overlap between a run's training prompts and the benchmarks' prompts."""
    from .evals import contamination

    report = contamination(run_dir)
    for name, r in report["benchmarks"].items():
        click.echo(
            f"{name}: {r['overlapping_training_prompts']} of {report['training']['unique_prompts']} training "
            f"prompts ({100 * r['training_overlap_rate']:.2f}%) overlap {r['overlapping_benchmark_prompts']} "
            f"of {r['benchmark_prompts']} benchmark prompts (details: {run_dir}/contamination.json)"
        )
    for name, reason in report["skipped"].items():
        click.echo(f"{name}: not checked ({reason})")


@eval_group.command("compare")
@click.argument("a", callback=_given)
@click.argument("b", callback=_given)
@click.option(
    "--decodings",
    default=None,
    callback=_given,
    metavar="D1,D2,...",
    help="Compare each of these decodings and their per-prompt average (the first one's families shown). A side "
    "given once is found per decoding one directory down: DIR/NAME_results.json -> DIR/D1/NAME_results.json "
    "(a recipe's OUT/eval/MODEL/D1/); a side given as D1's,D2's,... files is taken as listed.",
)
@click.option(
    "--json",
    "json_out",
    default=None,
    callback=_given,  # checked before the work (`check_writable`), in one line
    help="Also write every number (each metric, instruction and family) to this JSON file.",
)
@click.option("--resamples", default=10_000, show_default=True, type=click.IntRange(min=1), help="Bootstrap resamples.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
def compare_cmd(a: str, b: str, decodings: str | None, json_out: str | None, resamples: int, seed: int) -> None:
    """Two runs of one benchmark, paired prompt by prompt: B - A per metric with a bootstrap 95%
    interval and McNemar's p, and the instruction families that moved. A and B: a results JSON, or
    a directory holding one (its *_responses.jsonl must sit beside it); several decodings of each
    model: A1,A2 B1,B2 (paired by position) or --decodings."""
    import json

    from rich.console import Console

    from .evals.results import compare_table, decodings_table
    from .evals.stats import compare_decodings, compare_runs, decoding_path, run_label
    from .jsonl import atomic_write_text, check_writable

    if json_out is not None:  # before the work: a path that cannot be written fails at once
        check_writable(json_out, "--json")
    sides = [[p for p in side.split(",") if p] for side in (a, b)]
    names = [d.strip() for d in decodings.split(",")] if decodings else []
    if not names and len(sides[0]) == len(sides[1]) == 1:
        report = compare_runs(a, b, resamples=resamples, seed=seed)
        Console().print(compare_table(report))
    else:
        names = names or [f"#{n}" for n in range(1, max(map(len, sides)) + 1)]
        paths: list[list[str | Path]] = []
        for given, side in zip((a, b), sides):
            if len(side) not in (1, len(names)) or (len(side) == 1 and not decodings):
                raise AutoifError(
                    f"{given}: give one results path for each of the {len(names)} decodings, or one path "
                    "and the decodings' names (--decodings) to find them under it"
                )
            paths.append([decoding_path(side[0], d) if len(side) == 1 else side[n] for n, d in enumerate(names)])
        labels = run_label(sides[0][0], sides[1][0])
        report = compare_decodings(paths[0], paths[1], names, names=labels, resamples=resamples, seed=seed)
        Console().print(decodings_table(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"autoif: comparison written to {json_out}")


@eval_group.command("agreement")
@click.argument("configurations", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--proxy",
    default="dev:prompt_pass",
    show_default=True,
    metavar="BENCH:METRIC",
    help="The metric the configurations are chosen on.",
)
@click.option(
    "--target",
    default="ifeval:prompt_loose",
    show_default=True,
    metavar="BENCH:METRIC",
    help="The metric they are measured on.",
)
@click.option(
    "--decoding",
    default=None,
    callback=_given,
    help="Read each benchmark's results from DIR/DECODING/ where they are there (a recipe's OUT/eval/MODEL/).",
)
@click.option("--json", "json_out", default=None, callback=_given, help="Also write the numbers to this JSON file.")
def agreement_cmd(
    configurations: tuple[str, ...], proxy: str, target: str, decoding: str | None, json_out: str | None
) -> None:
    """Whether the proxy ranks the configurations as the target does: each configuration's values
    and ranks, and Spearman's rank correlation over them. CONFIGURATIONS: directories each holding
    the proxy's and the target's results (`autoif eval ... --out DIR`), named by their directory."""
    import json

    from rich.console import Console

    from .evals.agreement import agreement_table, parse_measure, rank_agreement, results_in
    from .jsonl import atomic_write_text, check_writable

    if json_out is not None:
        check_writable(json_out, "--json")
    measures = parse_measure(proxy), parse_measure(target)
    named = {Path(d).resolve().name: d for d in configurations}
    if len(named) != len(configurations):
        raise AutoifError("name each configuration's directory differently: its name labels the row")
    paths = {
        n: (results_in(d, measures[0][0], decoding), results_in(d, measures[1][0], decoding)) for n, d in named.items()
    }
    report = rank_agreement(paths, *measures)
    Console().print(agreement_table(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"autoif: agreement written to {json_out}")


@cli.command("recipe")
@click.argument("recipe_file", type=click.Path(dir_okay=False), callback=_given)
@click.option("-o", "--out", default=None, callback=_given, help="Output directory (default: runs/<recipe name>).")
@set_option
@click.option("--dry-run", is_flag=True, help="Print the steps, which are done and what would run; run nothing.")
def recipe_cmd(recipe_file: str, out: str | None, overrides: tuple[str, ...], dry_run: bool) -> None:
    """Run a whole experiment: data, training chain, evaluations, comparisons, results page.

    Every step is skipped when done with the same settings and resumes when cut off; --set
    train.STEP.KEY=VALUE changes a trainer setting, other keys are the recipe's (eval.limit=5).
    """
    import shlex

    from .recipe import Plan, describe, load_recipe, run_plan

    recipe = load_recipe(recipe_file, overrides)
    out = out or str(Path("runs") / recipe.name)
    command = shlex.join(["autoif", "recipe", recipe_file, "-o", out, *(a for o in overrides for a in ("--set", o))])
    plan = Plan(recipe, recipe_file, out, command)
    if dry_run:
        click.echo("\n".join(describe(plan)))
        return
    run_plan(plan)
    click.echo(f"autoif: results in {plan.out / 'results.md'}")


@cli.command("batches")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--cancel", is_flag=True, help="Cancel every batch that has not finished.")
def batches_cmd(out: str, cancel: bool) -> None:
    """List the batch jobs of a run in batch mode (llm.batch) and their last seen state."""
    from rich.console import Console
    from rich.table import Table

    from .llm.batch import batch_rows, cancel_batches

    if cancel:
        for batch_id, status in cancel_batches(out):
            click.echo(f"autoif: cancel {batch_id}: {status}")
    rows = batch_rows(out)
    if not rows:
        click.echo(f"autoif: no batch jobs under {out}")
        return
    table = Table(title=f"batch jobs ({out})")
    for col in ("state file", "backend", "model", "batch", "requests", "status"):
        table.add_column(col, justify="right" if col == "requests" else "left")
    for row in rows:
        table.add_row(*map(str, row))
    Console(width=200).print(table)


@cli.command("report")
@click.argument("out", type=click.Path(file_okay=False), callback=_given)
def report_cmd(out: str) -> None:
    """Write OUT/report.html: funnel, distributions, samples and eval results of a run."""
    from .report import write_report

    click.echo(f"autoif: report written to {write_report(Path(out))}")


def main() -> None:
    cli(prog_name="autoif")


if __name__ == "__main__":
    main()
