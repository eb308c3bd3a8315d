"""SAT benchmark evaluation: sample a model on a JSONL set, report pass@k per bucket.

Saturn's protocol: 12 samples per problem at temperature 0.6 and top-p 0.95, the
unbiased pass@k for k in {1, 3, 5, 7, 10} (only k <= samples), per (n, k, l) bucket
with its D, and over all problems. A sample counts as correct only with reward +1 from
`envs.sat.score_answer` (exactly k bits satisfying every clause); the share of samples
with no boxed answer at all is reported too, since small models often never answer.
The model is loaded and sampled with the trainer's own code (`trainers.models`,
`trainers.generation`), so evaluation sees the model exactly as training does.

``--thinking markovian`` samples Delethink traces instead (``envs.markovian``): chunks of
``--chunk`` tokens with ``--carry`` (of which ``--head``) carried over, at most
``--max-chunks`` chunks; by default the fewest chunks whose budget C + (I - 1)(C - carry)
reaches ``--max-new-tokens``, so the same flag gives both modes the same total token budget.
A trace that hits the cap counts as no answer. The report adds ``budget_hit_rate``: the
share of samples cut by the budget (plain: ``max_new_tokens`` reached; Markovian: the cap).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Sequence

from tqdm import tqdm

from benchmarks.outputs import check_output_path
from benchmarks.passk import STANDARD_KS, pass_at_k_by_bucket, usable_ks
from curricula.sat import SatInstance, difficulty
from envs.sat import ANSWER_FORMATS, CORRECT_REWARD, NO_ANSWER_REWARD, prompt_messages, score_answer

HELP = "pass@k of a model on a SAT benchmark file (benchmarks.generate sat output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSONL file written by benchmarks.generate sat")
    parser.add_argument("--model", required=True, help="tiny-random, smollm2-135m, or a local model folder")
    parser.add_argument("--samples", type=int, default=12, help="samples per problem (default 12)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--limit", type=int, help="evaluate only the first N problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--answer-format", choices=ANSWER_FORMATS, default="bits",
                        help="the answer the prompt asks for: bits (\\boxed{101}, Saturn's), named (\\boxed{A=1 B=0 C=1}) "
                             "or counted (each name followed by its sign counts: \\boxed{A (2 as A, 1 as !A)=1 ...}); "
                             "the checker accepts every form")
    parser.add_argument("--variable-notes", action="store_true",
                        help="list under the formula how often each variable occurs plain and negated (the env's variable_notes)")
    parser.add_argument("--thinking", choices=("plain", "markovian"), default="plain",
                        help="plain: one generation of --max-new-tokens; markovian: Delethink chunks")
    parser.add_argument("--chunk", type=int, default=512, help="markovian: chunk size C (default 512)")
    parser.add_argument("--carry", type=int, default=256, help="markovian: carried tokens m < C (default 256)")
    parser.add_argument("--head", type=int, default=64, help="markovian: carried tokens from the first chunk's start (default 64)")
    parser.add_argument("--max-chunks", type=int,
                        help="markovian: chunks per trace at most (default: the fewest reaching --max-new-tokens)")


def load_problems(path: str, limit: int | None = None) -> list[tuple[str, SatInstance]]:
    """(id, instance) per line; ValueError naming file:line for malformed JSON or a record
    that is not one consistent formula (see `SatInstance.from_record`)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be positive, got {limit}")
    problems = []
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ValueError(f"cannot read --data {path!r}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: malformed JSON ({error})") from None
            try:
                instance = SatInstance.from_record(record)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: not a SAT record ({error})") from None
            problems.append((str(record.get("id", f"line-{number}")), instance))
    if not problems:
        raise ValueError(f"{path} holds no SAT records")
    return problems


def sample_texts(
    model, tokenizer, instances: Sequence[SatInstance], *, samples: int, max_new_tokens: int,
    temperature: float, top_p: float, seed: int, batch_size: int, progress: bool = True,
    prompt_options: dict | None = None,
) -> list[list[str]]:
    """`samples` responses per instance; one seeded generate call per batch, so the
    result depends only on the arguments, not on how progress is shown. `prompt_options`:
    ``envs.sat.prompt_messages``' keyword arguments (the answer format, variable notes)."""
    texts, _ = _sample_plain(
        model, tokenizer, instances, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, seed=seed, batch_size=batch_size, progress=progress, prompt_options=prompt_options,
    )
    return texts


def _sample_plain(model, tokenizer, instances, *, samples, max_new_tokens, temperature, top_p, seed, batch_size, progress,
                  prompt_options=None):
    """`sample_texts` plus the share of samples that reached `max_new_tokens`."""
    from trainers.generation import generate

    prompts = [prompt_messages(instance, **(prompt_options or {})) for instance in instances for _ in range(samples)]
    texts: list[str] = []
    cut = 0
    with tqdm(total=len(prompts), desc="sampling", unit="sample", disable=not progress, file=sys.stderr) as bar:
        for batch_number, start in enumerate(range(0, len(prompts), batch_size)):
            batch = prompts[start : start + batch_size]
            outputs = generate(
                model, tokenizer, batch, max_new_tokens=max_new_tokens, temperature=temperature,
                top_p=top_p, seed=seed + batch_number, batch_size=batch_size,
            )
            texts.extend(output.text for output in outputs)
            cut += sum(output.finish_reason == "length" for output in outputs)
            bar.update(len(batch))
    return [texts[i * samples : (i + 1) * samples] for i in range(len(instances))], cut / len(prompts)


def sample_markovian(
    model, tokenizer, instances: Sequence[SatInstance], *, samples: int, config, temperature: float,
    top_p: float, seed: int, batch_size: int, progress: bool = True, prompt_options: dict | None = None,
) -> tuple[list[list[str]], dict]:
    """`samples` Markovian traces per instance (`config`: an ``envs.markovian.MarkovianConfig``).

    Every trace advances together, one backend call per round (``run_traces``); the texts are
    the traces' answers (empty for a trace that hit the cap). Returns (texts, statistics).
    """
    from trainers.generation import TransformersBackend
    from trainers.generation.traces import MARKOVIAN_ROUND, generate_chunks, new_traces, token_codec
    from trainers.run.seeds import derive_seed

    prompts = [prompt_messages(instance, **(prompt_options or {})) for instance in instances for _ in range(samples)]
    traces = new_traces(prompts, token_codec(tokenizer), config)
    backend = TransformersBackend(model, tokenizer)
    with tqdm(total=config.max_chunks, desc="chunk rounds", disable=not progress, file=sys.stderr) as bar:
        rounds = 0
        while any(not trace.done for trace in traces):
            generate_chunks(
                backend, traces, seed=derive_seed(seed, MARKOVIAN_ROUND, rounds), temperature=temperature,
                top_p=top_p, batch_size=batch_size,
            )
            rounds += 1
            bar.update(1)
    texts = [trace.answer_text() for trace in traces]
    count = len(traces)
    stats = {
        "budget_hit_rate": sum(t.cap_hit for t in traces) / count,
        "chunks_per_trace": sum(len(t.chunks) for t in traces) / count,
        "thinking_tokens_per_trace": sum(t.thinking_tokens for t in traces) / count,
        "largest_context": max(t.largest_context for t in traces),
    }
    return [texts[i * samples : (i + 1) * samples] for i in range(len(instances))], stats


def score_problems(problems: Sequence[tuple[str, SatInstance]], texts: Sequence[Sequence[str]]) -> dict:
    """The report (pass@k per bucket and overall, per-problem rewards) for sampled texts."""
    samples = {len(t) for t in texts}
    if len(texts) != len(problems) or len(samples) != 1:
        raise ValueError("need the same number of samples for every problem")
    num_samples = samples.pop()
    ks = usable_ks(num_samples, STANDARD_KS)
    by_bucket: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
    no_answers: dict[tuple[int, int, int], int] = defaultdict(int)
    rows = []
    for (problem_id, instance), problem_texts in zip(problems, texts):
        rewards = [score_answer(instance, text)[0] for text in problem_texts]
        correct = sum(r == CORRECT_REWARD for r in rewards)
        by_bucket[instance.level].append((num_samples, correct))
        no_answers[instance.level] += sum(r == NO_ANSWER_REWARD for r in rewards)
        rows.append({"id": problem_id, "n": instance.n, "k": instance.k, "l": instance.l,
                     "num_correct": correct, "rewards": rewards})
    per_bucket, overall = pass_at_k_by_bucket(by_bucket, ks)
    buckets = []
    for level in sorted(by_bucket, key=lambda level: (difficulty(*level), level)):
        count = len(by_bucket[level])
        buckets.append({
            "n": level[0], "k": level[1], "l": level[2], "difficulty": difficulty(*level),
            "num_problems": count,
            "pass_at_k": {str(k): value for k, value in per_bucket[level].items()},
            "no_answer_rate": no_answers[level] / (count * num_samples),
        })
    return {
        "samples": num_samples,
        "ks": ks,
        "buckets": buckets,
        "overall": {
            "num_problems": len(problems),
            "pass_at_k": {str(k): value for k, value in overall.items()},
            "no_answer_rate": sum(no_answers.values()) / (len(problems) * num_samples),
        },
        "problems": rows,
    }


def format_table(report: dict) -> str:
    """Pass@k in percent, one row per bucket (with D) and an overall row."""
    ks = report["ks"]
    header = f"{'bucket (n,k,l)':<16}{'D':>7}{'N':>6}" + "".join(f"{'pass@' + str(k):>9}" for k in ks) + f"{'no-answer':>11}"
    lines = [header, "-" * len(header)]

    def row(name: str, d: str, entry: dict) -> str:
        values = "".join(f"{100 * entry['pass_at_k'][str(k)]:>9.1f}" for k in ks)
        return f"{name:<16}{d:>7}{entry['num_problems']:>6}{values}{100 * entry['no_answer_rate']:>10.1f}%"

    for bucket in report["buckets"]:
        lines.append(row(f"({bucket['n']},{bucket['k']},{bucket['l']})", f"{bucket['difficulty']:.2f}", bucket))
    lines.append(row("overall", "", report["overall"]))
    return "\n".join(lines)


def _thinking_settings(args: argparse.Namespace) -> dict | None:
    """None for plain generation; else the Markovian settings (ValueError for a bad one)."""
    if getattr(args, "thinking", "plain") != "markovian":
        return None
    from envs.markovian import MarkovianConfig

    if args.max_chunks is None:
        config = MarkovianConfig.for_length(args.max_new_tokens, chunk=args.chunk, carry=args.carry, head=args.head)
    else:
        config = MarkovianConfig(args.chunk, args.carry, args.head, args.max_chunks).validate()
    return {
        "thinking": "markovian", "chunk": config.chunk, "carry": config.carry, "head": config.head,
        "max_chunks": config.max_chunks, "thinking_budget": config.thinking_budget, "config": config,
    }


def run(args: argparse.Namespace) -> int:
    for name in ("samples", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.out:
        check_output_path(args.out, "--out")
    problems = load_problems(args.data, args.limit)
    from trainers.models import load_model

    thinking = _thinking_settings(args)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    instances = [instance for _, instance in problems]
    options = dict(samples=args.samples, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                   batch_size=args.batch_size, progress=not args.no_progress,
                   prompt_options={"answer_format": args.answer_format, "variable_notes": args.variable_notes})
    if thinking is None:
        texts, budget_hit_rate = _sample_plain(model, tokenizer, instances, max_new_tokens=args.max_new_tokens, **options)
        thinking = {"thinking": "plain", "budget_hit_rate": budget_hit_rate}
    else:
        texts, stats = sample_markovian(model, tokenizer, instances, config=thinking.pop("config"), **options)
        thinking.update(stats)
    report = {
        "task": "sat", "data": args.data, "model": args.model, "temperature": args.temperature,
        "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
        "answer_format": args.answer_format, "variable_notes": args.variable_notes, **thinking,
        **score_problems(problems, texts),
    }
    print(format_table(report))
    print(f"thinking={report['thinking']}: {100 * report['budget_hit_rate']:.1f}% of samples hit the token budget")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0
