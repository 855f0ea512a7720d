"""`persian-poetry`: the command line, a thin layer over the library.

Heavy imports (torch) happen inside each command, so `persian-poetry --help` answers at once.
Errors the user can fix are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys


def _add_train(sub) -> None:
    from .train_options import TRAIN_OPTIONS  # no torch

    p = sub.add_parser("train", help="train a model (writes a model directory and a report)",
                       description="Train a GPT on a Ganjoor-schema JSONL corpus or a plain text file. "
                                   "Values not given come from --preset, then from the defaults.")
    p.add_argument("--preset", choices=["notebook", "default"], help="a recorded configuration")
    for name, (kind, help_text) in TRAIN_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persian-poetry",
                                     description="A GPT trained from scratch that writes classical Persian poetry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a poem", description="Write a poem with a trained model "
                       "(the shipped default model unless --model is given). Offline.")
    g.add_argument("--poet", default="hafez", help="poet whose style to follow (default: hafez)")
    g.add_argument("--form", default="ghazal", help="form of the poem (default: ghazal)")
    g.add_argument("--couplets", type=int, default=None, help="number of couplets (default: by form, ghazal 7)")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--seed", type=int, default=None, help="same seed, same poem (default: random)")
    g.add_argument("--vowel-marks", action="store_true",
                   help="allow short-vowel marks and tashdid (off: plain script, as most verse is written)")
    g.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    g.add_argument("--no-stream", action="store_true", help="print the poem once it is complete")
    g.add_argument("--json", action="store_true", help="print the poem as JSON")
    g.add_argument("--list", action="store_true", help="list the poets and forms the model knows")

    _add_train(sub)

    t = sub.add_parser("train-tokenizer", help="build a char or BPE tokenizer for a corpus")
    t.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz)")
    t.add_argument("--kind", choices=["bpe", "char"], default="bpe")
    t.add_argument("--vocab-size", type=int, default=4096)
    t.add_argument("--poets", default="classical", help="'classical', 'all' or comma-separated slugs")
    t.add_argument("--max-chars", type=int, default=30_000_000, help="BPE training text cap")
    t.add_argument("--out", required=True, help="where to write the tokenizer JSON")

    c = sub.add_parser("train-metre-classifier", help="train the learned metre classifier (prosody)")
    c.add_argument("--data", required=True, help="Ganjoor-schema JSONL with metre labels")
    c.add_argument("--out", required=True, help="output directory (the shipped one: src/persian_poetry/metre_classifier)")
    c.add_argument("--poets", default="classical", help="'classical', 'all' or comma-separated slugs")
    c.add_argument("--time-budget", type=float, default=900, help="seconds of training")
    c.add_argument("--seed", type=int, default=1337)
    c.add_argument("--threads", type=int, default=1)

    s = sub.add_parser("scan", help="scan the metre and rhyme of verse",
                       description="Print each hemistich with its syllable weights (− long, ∪ short), the "
                                   "poem's metre with its Persian name and feet, the confidence, and the rhyme.")
    s.add_argument("text", nargs="?", help="verse, one hemistich a line (or use --file)")
    s.add_argument("--file", help="a UTF-8 text file, one hemistich a line")
    s.add_argument("--form", default=None, help="ghazal, rubai, masnavi, qasida, ... (default: guessed)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("evaluate-prosody", help="metre accuracy against Ganjoor's labels")
    p.add_argument("--data", required=True, help="Ganjoor-schema JSONL with metre labels")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--limit", type=int, default=None, help="only the first N labelled poems")
    p.add_argument("--confusion", default=None, help="write the poem-level confusion matrix to this PNG")
    p.add_argument("--json", action="store_true")

    e = sub.add_parser("evaluate", help="bits per character of a model on held-out poems")
    e.add_argument("--data", required=True, help="Ganjoor-schema JSONL, or a .txt (scored on its last 10%%)")
    e.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test",
                   help="which poems of the file, by the id hash of corpus.split_of (default: test)")
    e.add_argument("--poets", default="all", help="'all' (default), 'classical' or comma-separated slugs")
    e.add_argument("--limit", type=int, default=None, help="score only the first N poems")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import PoetryError

    try:
        return COMMANDS[args.command](args)
    except (PoetryError, FileNotFoundError, ValueError) as err:
        print(f"persian-poetry {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_generate(args) -> int:
    from .checkpoint import load_model
    from .generate import FORM_COUPLETS, PoemRequest, write_poem

    import torch

    # Batch-1 decoding of a small model is fastest on one thread (and does not fight a busy CPU).
    torch.set_num_threads(1)
    poetry = load_model(args.model)
    if args.list:
        print("poets:", ", ".join(poetry.controls.poets))
        print("forms:", ", ".join(f for f in poetry.controls.forms if f in FORM_COUPLETS))
        return 0
    request = PoemRequest(poet=args.poet, form=args.form, couplets=args.couplets, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, vowel_marks=args.vowel_marks)
    stream = not (args.no_stream or args.json)
    on_event = _terminal_streamer() if stream else None
    poem = write_poem(poetry, request, on_event=on_event)
    if args.json:
        print(json.dumps(poem.to_dict(), ensure_ascii=False, indent=1))
    elif not stream:
        print(poem.text())
    return 0


def _terminal_streamer():
    from .generate import GAP

    def on_event(kind: str, text: str) -> None:
        if kind == "text":
            sys.stdout.write(text)
        elif kind == "hemi":
            sys.stdout.write(GAP)
        elif kind in ("beyt", "end"):
            sys.stdout.write("\n")
        sys.stdout.flush()

    return on_event


def cmd_train(args) -> int:
    from .train import config_with_preset, train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "no_progress")}
    if args.no_progress:
        overrides["progress"] = False
    cfg = config_with_preset(args.preset, **overrides)
    report = train(cfg, command_line=["persian-poetry", *sys.argv[1:]] if sys.argv[0].endswith("persian-poetry")
                   else sys.argv)
    if report:
        final = report["final_val"]
        print(f"final validation: {final['bits_per_char']:.4f} bits/char ({final['nats_per_char']:.4f} nats/char); "
              f"model written to {cfg.out_dir}/model")
    return 0


def cmd_train_tokenizer(args) -> int:
    from .tokenizer import train_tokenizer
    from .train import resolve_poets

    tokenizer = train_tokenizer(args.data, args.kind, args.vocab_size, resolve_poets(args.poets), args.max_chars)
    tokenizer.save(args.out)
    print(f"{args.kind} tokenizer with {tokenizer.vocab_size} tokens "
          f"({len(tokenizer.special_tokens)} special) written to {args.out}")
    return 0


def cmd_train_metre_classifier(args) -> int:
    import torch

    from .classifier import train_classifier
    from .train import resolve_poets

    torch.set_num_threads(args.threads)
    report = train_classifier(args.data, args.out, resolve_poets(args.poets), args.time_budget, seed=args.seed,
                              command_line=["persian-poetry", *sys.argv[1:]])
    print(f"metre classifier: val hemistich accuracy {report['best_val_hemistich_accuracy']:.4f}; "
          f"written to {args.out}")
    return 0


def cmd_scan(args) -> int:
    from pathlib import Path

    from .metres import show_pattern
    from .prosody import scan

    if args.file:
        text = Path(args.file).read_text(encoding="utf-8")
    elif args.text:
        text = args.text
    else:
        raise ValueError("give the verse as an argument or with --file")
    result = scan(text, form=args.form)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        return 0
    if result.metre_id is None:
        raise ValueError("no Persian verse to scan")
    for h in result.hemistichs:
        syllables = h.rule.syllables
        if syllables:
            cells = [(s.letters or "·", show_pattern(s.weight)) for s in syllables]
            widths = [max(len(a), len(b)) for a, b in cells]
            print(h.text)
            print("  " + " ".join(a.ljust(w) for (a, _), w in zip(cells, widths, strict=True)))
            # RLM: lay the signs out right to left like the letters above them in a bidi terminal.
            print("\u200f  " + " ".join(b.ljust(w) for (_, b), w in zip(cells, widths, strict=True)))
        else:
            print(h.text + "\n  (the scanner cannot read this hemistich in the poem's metre)")
    print(f"metre: {result.name} (Ganjoor id {result.metre_id}); feet: {' '.join(result.feet)}; "
          f"confidence {result.confidence:.2f}")
    if result.rhyme is not None and result.rhyme.found:
        broken = f"; broken at hemistichs {', '.join(str(i + 1) for i in result.rhyme.broken)}" if result.rhyme.broken else ""
        print(f"rhyme (qafiya): {result.rhyme.qafiya}; refrain (radif): {' '.join(result.rhyme.radif) or '-'}{broken}")
    return 0


def cmd_evaluate_prosody(args) -> int:
    import torch

    from .prosody import evaluate_prosody

    torch.set_num_threads(1)
    result = evaluate_prosody(args.data, args.split, args.limit, confusion_png=args.confusion)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['split']} split: {result['poems']} labelled poems, {result['hemistichs']} hemistichs")
    print(f"{'method':12s} {'hemistich':>10s} {'poem':>8s} {'hemi top20':>11s} {'poem top20':>11s}")
    for name, m in result["methods"].items():
        print(f"{name:12s} {m['hemistich_accuracy']:10.2%} {m['poem_accuracy']:8.2%} "
              f"{m['hemistich_accuracy_top20']:11.2%} {m['poem_accuracy_top20']:11.2%}")
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from .evaluate import evaluate_file
    from .train import resolve_poets

    torch.set_num_threads(1)
    result = evaluate_file(args.data, args.model, split=args.split, limit=args.limit, batch_size=args.batch_size,
                           poets=resolve_poets(args.poets))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{result.bits_per_char:.4f} bits/char ({result.nats_per_char:.4f} nats/char) on "
              f"{result.poems} poem(s), {result.characters:,} characters, {result.tokens:,} tokens")
    return 0


COMMANDS = {"generate": cmd_generate, "train": cmd_train, "train-tokenizer": cmd_train_tokenizer,
            "evaluate": cmd_evaluate, "train-metre-classifier": cmd_train_metre_classifier, "scan": cmd_scan,
            "evaluate-prosody": cmd_evaluate_prosody}

if __name__ == "__main__":
    sys.exit(main())
