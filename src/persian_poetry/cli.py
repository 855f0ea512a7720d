"""`persian-poetry`: the command line, a thin layer over the library.

Each command imports what it needs when it runs. Writing, scanning, explaining and serving run
on numpy and never import PyTorch (2-3 s to import on our 2-core machine, and not installed by
`pip install .`); training and evaluation do, and without it they say how to install it. The
parser itself reads its defaults from torch-free modules (`gpt.config`, `writing.request`). Errors
the user can fix are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import PoetryError
from .gpt.config import PRESETS, command_line_options
from .writing.request import MAX_BEST_OF, MAX_STRENGTH, PoemRequest

DEFAULTS = PoemRequest()
# The commands that run the numpy network, one token at a time: its products are too small for
# BLAS to share out (`gpt.inference.one_blas_thread`), and the pool of BLAS threads that numpy
# starts on import costs a tenth of a second of CPU before the first token. Set before numpy is
# imported, so the pool is never started (a user's own setting is kept).
ONE_BLAS_THREAD_COMMANDS = ("generate", "scan", "explain", "serve")
# The commands whose process may end without the interpreter's teardown once their output is
# flushed (`run`): nothing is left to do then, and freeing the lexicon, the scanner's tables and
# the weights object by object took 60-90 ms, 6-8% of a 7-couplet ghazal's second.
QUICK_EXIT_COMMANDS = ("generate", "scan")
# The modules of the optional extras (pyproject.toml): what needs them, and the extra to install.
OPTIONAL_MODULES = {"torch": ("training and evaluation", "train"), "matplotlib": ("drawing figures", "plots"),
                    "arabic_reshaper": ("drawing Persian in figures", "plots"),
                    "bidi": ("drawing Persian in figures", "plots")}


def _add_sampling(parser) -> None:
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    parser.add_argument("--top-k", type=int, default=DEFAULTS.top_k)
    parser.add_argument("--top-p", type=float, default=DEFAULTS.top_p)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (writes a model directory and a report)",
                       description="Train a GPT on a Ganjoor-schema JSONL corpus or a plain text file. "
                                   "Values not given come from --preset, then from the defaults.")
    p.add_argument("--preset", choices=list(PRESETS), help="a recorded configuration")
    for name, kind, help_text in command_line_options():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=None, help=help_text)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _add_explain(sub) -> None:
    x = sub.add_parser("explain", help="see inside the GPT: tokens, positions, attention, decoding",
                       description="The lesson of how a GPT works, step by step, on the seed's worked example "
                                   "and on the real model. See docs/how-it-works.md.")
    steps = x.add_subparsers(dest="explain_command", required=True, metavar="STEP")
    t = steps.add_parser("tokens", help="text -> normalized text -> tokens and ids, against the token limit")
    t.add_argument("text", help="Persian text")
    p = steps.add_parser("positional", help="the sinusoidal positional encoding table",
                         description="Print PE(pos, i) for --positions x --dim; with --dim 4 (the default) also "
                                     "the seed's worked example (The Cat Sat Mat) and where its numbers are off.")
    p.add_argument("--positions", type=int, default=4)
    p.add_argument("--dim", type=int, default=4)
    p.add_argument("--plot", metavar="FILE.png", help="draw the heat map for the model's context length x width "
                                                     "(a rotary model: x its head's width, the angles it turns by)")
    a = steps.add_parser("attention", help="masked multi-head self-attention, by hand and in the real model")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--example", action="store_true", help="the seed's three-head example (The Cat Sat Mat)")
    source.add_argument("--text", help="a hemistich: the real model's weights, every layer and head")
    a.add_argument("--plot", metavar="PATH", help="--example: a PNG file; --text: a directory (one PNG per layer)")
    a.add_argument("--layer", type=int, action="append", help="print only this layer (1-based; repeatable)")
    a.add_argument("--head", type=int, action="append", help="print only this head (1-based; repeatable)")
    g = steps.add_parser("generate", help="decoding step by step: candidates, probabilities, the token drawn")
    g.add_argument("--poet", default=DEFAULTS.poet)
    g.add_argument("--form", default=DEFAULTS.form)
    g.add_argument("--steps", type=int, default=20)
    _add_sampling(g)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--top", type=int, default=5, help="candidates shown per step")
    for q in (t, p, a, g):
        q.add_argument("--model", default=None, help="model directory (default: the shipped model)")
        q.add_argument("--json", action="store_true", help="print the numbers as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persian-poetry",
                                     description="A GPT trained from scratch that writes classical Persian poetry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a poem", description="Write a poem with a trained model "
                       "(the shipped default model unless --model is given). Offline.")
    g.add_argument("--poet", default=DEFAULTS.poet, help=f"poet whose style to follow (default: {DEFAULTS.poet})")
    g.add_argument("--form", default=DEFAULTS.form, help=f"form of the poem (default: {DEFAULTS.form})")
    g.add_argument("--couplets", type=int, default=None, help="number of couplets (default: by form, ghazal 7)")
    g.add_argument("--metre", default=None,
                   help="metre: Ganjoor id, name or feet, e.g. 7 or 'رمل مثمن مخبون محذوف' (default: the model chooses)")
    g.add_argument("--rhyme", default=None, help="qafiya letters, e.g. 'ار' (default: a common one, by seed)")
    g.add_argument("--radif", default=None, help="refrain word(s) after the qafiya, e.g. 'ما' (needs --rhyme)")
    g.add_argument("--first", action="append", default=None, metavar="HEMISTICH",
                   help="a hemistich to begin with (repeat for a couplet or more); the model continues")
    g.add_argument("--free", action="store_true",
                   help="no metre or rhyme constraints while decoding: what the model writes alone")
    g.add_argument("--list-metres", action="store_true", help="list the metres the model knows and exit")
    _add_sampling(g)
    g.add_argument("--seed", type=int, default=None, help="same seed, same poem (default: random)")
    g.add_argument("--vowel-marks", action="store_true",
                   help="allow short-vowel marks and tashdid (off: plain script, as most verse is written)")
    g.add_argument("--style", type=float, default=DEFAULTS.style, metavar="STRENGTH",
                   help=f"weight of the poet's word preferences counted on his verse, 0 to {MAX_STRENGTH} "
                        f"(default {DEFAULTS.style}; 0: the model alone)")
    g.add_argument("--best-of", type=int, default=DEFAULTS.best_of, metavar="N",
                   help=f"write each hemistich N times and keep the one the model finds likeliest, 1 to "
                        f"{MAX_BEST_OF} (default {DEFAULTS.best_of}; about N times slower)")
    g.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    g.add_argument("--no-stream", action="store_true", help="print the poem once it is complete")
    g.add_argument("--json", action="store_true", help="print the poem as JSON")
    g.add_argument("--list", action="store_true", help="list the poets and forms the model knows")

    _add_train(sub)
    _add_explain(sub)

    t = sub.add_parser("train-tokenizer", help="build a char or BPE tokenizer for a corpus")
    t.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz), or a .txt (learns from its first 90%%)")
    t.add_argument("--kind", choices=["bpe", "char"], default="bpe")
    t.add_argument("--vocab-size", type=int, default=4096)
    t.add_argument("--poets", default="classical", help="'classical', 'all' or comma-separated slugs")
    t.add_argument("--max-chars", type=int, default=30_000_000, help="BPE training text cap")
    t.add_argument("--out", required=True, help="where to write the tokenizer JSON")

    pd = sub.add_parser("prepare-data", help="encode a corpus once into a folder that train reads as --data",
                        description="Encode a Ganjoor-schema JSONL corpus with a tokenizer into a folder of token "
                                    "arrays (each split), the tokenizer, the metre names and the poets. `train --data "
                                    "FOLDER` trains from it without the corpus file: copy it to a machine that lacks "
                                    "the corpus, or give it to every rank of a multi-machine run.")
    pd.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz)")
    pd.add_argument("--tokenizer", required=True, help="'char' or a tokenizer JSON from train-tokenizer")
    pd.add_argument("--poets", default="classical", help="'classical' (default), 'all' or comma-separated slugs")
    pd.add_argument("--out", required=True, help="the folder to write (made if missing)")
    pd.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("train-metre-classifier", help="train the learned metre classifier (prosody)")
    c.add_argument("--data", required=True, help="Ganjoor-schema JSONL with metre labels")
    c.add_argument("--out", required=True, help="output directory (the shipped one: src/persian_poetry/assets/metre_classifier)")
    c.add_argument("--poets", default="classical", help="'classical', 'all' or comma-separated slugs")
    c.add_argument("--time-budget", type=float, default=900, help="seconds of training")
    c.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: the time decides)")
    c.add_argument("--seed", type=int, default=1337)
    c.add_argument("--threads", type=int, default=1)

    pc = sub.add_parser("train-poet-classifier", help="train the poet classifier (which of the 10 offered poets)",
                        description="Train the metre classifier's network to name the poet of a hemistich, on the "
                                    "train split of the 10 offered poets (class-balanced); print its val and test "
                                    "accuracy per poem and per hemistich.")
    pc.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz)")
    pc.add_argument("--out", required=True, help="output directory (the shipped one: src/persian_poetry/assets/poet_classifier)")
    pc.add_argument("--time-budget", type=float, default=720, help="seconds of training")
    pc.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: the time decides)")
    pc.add_argument("--seed", type=int, default=1337)
    pc.add_argument("--threads", type=int, default=1)
    pc.add_argument("--json", action="store_true", help="print the whole report as JSON")

    s = sub.add_parser("scan", help="scan the metre and rhyme of verse",
                       description="Print each hemistich with its syllable weights (− long, ∪ short), the "
                                   "poem's metre with its Persian name and feet, the confidence, and the rhyme.")
    s.add_argument("text", nargs="?", help="verse, one hemistich a line (or use --file)")
    s.add_argument("--file", help="a UTF-8 text file, one hemistich a line ('-': standard input)")
    s.add_argument("--form", default=None, help="ghazal, rubai, masnavi, qasida, ... (default: guessed)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("evaluate-prosody", help="metre accuracy against Ganjoor's labels")
    p.add_argument("--data", required=True, help="Ganjoor-schema JSONL with metre labels")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--limit", type=int, default=None, help="only the first N labelled poems")
    p.add_argument("--confusion", default=None, help="write the poem-level confusion matrix to this PNG")
    p.add_argument("--json", action="store_true")

    b = sub.add_parser("build-lexicon", help="count the words of the train split for constrained decoding",
                       description="Write the lexicon constrained decoding uses (every word of the train split's "
                                   "hemistichs and how often it ends one). The shipped one: --out "
                                   "src/persian_poetry/assets/lexicon.tsv.gz --poets classical.")
    b.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz)")
    b.add_argument("--poets", default="classical", help="'classical', 'all' or comma-separated slugs")
    b.add_argument("--out", required=True, help="where to write the lexicon (.tsv.gz)")

    st = sub.add_parser("build-style", help="count each poet's tokens for the style prior of a model",
                        description="Write style.safetensors into a model directory: for each of the ten offered "
                                    "poets, log p(token | poet) - log p(token) over the train split's hemistichs "
                                    "(see style.py). Generation adds it to the logits, weighted by --style.")
    st.add_argument("--data", required=True, help="Ganjoor-schema JSONL (.jsonl or .jsonl.gz)")
    st.add_argument("--model", default=None, help="model directory (default: the shipped model)")

    v = sub.add_parser("evaluate-generation", help="write poems and judge metre, rhyme, form, novelty, style",
                       description="Write N poems with fixed seeds (forms ghazal, rubai, masnavi, qasida; the ten "
                                   "most common metres; rhymes of real train-split poems) and judge them with our "
                                   "prosody module and poet classifier; novelty against the train split of --data.")
    v.add_argument("--data", required=True, help="Ganjoor-schema JSONL (the train split is the novelty reference)")
    v.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    v.add_argument("-n", "--poems", type=int, default=100)
    v.add_argument("--free", action="store_true", help="without constrained decoding (the model alone)")
    v.add_argument("--compare", action="store_true", help="both: constrained, then free (the corpus read once)")
    v.add_argument("--style", type=float, default=None, metavar="STRENGTH",
                   help="poet-style strength for every poem (default: generate's default; 0: the model alone)")
    v.add_argument("--best-of", type=int, default=None, metavar="N",
                   help="candidates a hemistich for the constrained poems (default: generate's default)")
    v.add_argument("--first-seed", type=int, default=1000, help="seed of the first poem (the next get +1, +2, ...)")
    v.add_argument("--out", default=None, help="write the full report (every poem) as JSON here")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")

    e = sub.add_parser("evaluate", help="bits per character of a model on held-out poems")
    e.add_argument("--data", required=True, help="Ganjoor-schema JSONL, or a .txt (scored on its last 10%%)")
    e.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test",
                   help="which poems of the file, by the id hash of corpus.split_of (default: test)")
    e.add_argument("--poets", default="all", help="'all' (default), 'classical' or comma-separated slugs")
    e.add_argument("--limit", type=int, default=None, help="score only the first N poems")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="int8: score the model with dynamic int8 linear layers (CPU)")
    e.add_argument("--mix", default=None, metavar="INDEX_DIR",
                   help="score the model mixed with an infini-gram over the train split: a directory with its "
                        "suffix array and mixture weights (mix.json), as benchmarks/infinigram_mix.py --write-mix "
                        "writes it")

    tj = sub.add_parser("tell-apart", help="how often a fresh classifier tells generated couplets from real ones",
                        description="Train a fresh judge (BiGRUs over the characters and over the words in order, hearing the "
                                    "metre through the metre classifier; a fixed recipe, judges/tell_apart.py), "
                                    "starting from a reader that learned word order on real verse against its own "
                                    "shuffles (trained once per corpus, about 90 minutes on one thread, then cached), on "
                                    "real train-split couplets of the offered poets against couplets the model writes, and "
                                    "report its accuracy on held-out couplets, equal numbers of each: 50%% means the two "
                                    "cannot be told apart. Generated couplets are cached under the cache folder "
                                    "(tell-apart/), so a rerun with the same model writes nothing.")
    tj.add_argument("--data", required=True, help="Ganjoor-schema JSONL (train split to train on, test split to score)")
    tj.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    tj.add_argument("--mode", action="append", choices=["constrained", "free", "hot", "best-of-2", "best-of-4"],
                    default=None, help="how the poems are written: constrained (default), free, hot (free at "
                                       "temperature 1.2), or best-of-N (each hemistich the likeliest of N); repeat for several")
    tj.add_argument("--train", type=int, default=5000, help="training couplets of each class (default 5000)")
    tj.add_argument("--test", type=int, default=1000, help="held-out couplets of each class (default 1000)")
    tj.add_argument("--controls", action="store_true",
                    help="also the controls, at the same sizes: real against the same couplets with their words "
                         "shuffled (should be told apart) and real against real (should be 50%%)")
    tj.add_argument("--out", default=None, help="write the full report as JSON here")
    tj.add_argument("--json", action="store_true", help="print the report as JSON")
    tj.add_argument("--no-progress", action="store_true")

    x = sub.add_parser("export-hf", help="export the model for Hugging Face transformers",
                       description="Write a model as a transformers checkpoint (safetensors, config.json): "
                                   "GPT2LMHeadModel for the GPT-2 block, NanoChatForCausalLM for the modern one "
                                   "(rotary, RMSNorm, ReLU², QK-norm), with its tokenizer as a PreTrainedTokenizerFast. "
                                   "Needs the [hf] extra: pip install 'persian-poetry[hf]'.")
    x.add_argument("out", metavar="DIR", help="output directory")
    x.add_argument("--model", default=None, help="model directory (default: the shipped model)")

    w = sub.add_parser("serve", help="the web app and HTTP API (write, watch and inspect a poem in a browser)",
                       description="Serve the web page and the JSON API (schema at /openapi.json) with uvicorn. "
                                   "Offline; the model is loaded once.")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    w.add_argument("--port", type=int, default=8000)
    w.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    w.add_argument("--workers", type=int, default=2, help="poems written at once, one thread each (default: 2)")
    w.add_argument("--queue", type=int, default=6,
                   help="poems that may wait for a worker; more are refused with 503 (default: 6)")
    w.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable). Always answered: the "
                        "--host address, and for a loopback one localhost, 127.0.0.1 and [::1]; any other "
                        "Host is refused (a web page reaching a local server through DNS rebinding)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ONE_BLAS_THREAD_COMMANDS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush does not fail again
        return 141  # as a shell reports a process that SIGPIPE ended
    except (PoetryError, OSError, ValueError) as err:  # OSError: a missing file, a directory, no permission
        print(f"persian-poetry {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional part that `pip install .` leaves out
        extra = OPTIONAL_MODULES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        what, name = extra
        print(f"persian-poetry {args.command}: error: {what} needs {err.name}, which is not installed; install "
              f"it with: pip install 'persian-poetry[{name}]' (or, from a checkout, pip install '.[{name}]')",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_generate(args) -> int:
    from .writing.bundle import load_model
    from .writing.generate import write_poem
    from .writing.request import FORM_COUPLETS

    poetry = load_model(args.model)
    if args.list:
        print("poets:", ", ".join(poetry.controls.poets))
        print("forms:", ", ".join(f for f in poetry.controls.forms if f in FORM_COUPLETS))
        return 0
    if args.list_metres:
        from .prosody.metres import load_catalogue

        known = set(poetry.controls.metres)
        print("id\tpoems\tpattern\tmetre")
        for m in sorted((m for m in load_catalogue() if m.id in known), key=lambda m: -m.poems):
            print(f"{m.id}\t{m.poems}\t{m.pattern}\t{m.name}")
        return 0
    request = PoemRequest(poet=args.poet, form=args.form, couplets=args.couplets, metre=args.metre,
                          rhyme=args.rhyme, radif=args.radif, first=args.first, free=args.free,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                          vowel_marks=args.vowel_marks, style=args.style,
                          best_of=args.best_of)
    stream = not (args.no_stream or args.json)
    on_event = _terminal_streamer() if stream else None
    poem = write_poem(poetry, request, on_event=on_event)
    if args.json:
        print(json.dumps(poem.to_dict(), ensure_ascii=False, indent=1))
    elif not stream:
        print(poem.text())
    return 0


def _terminal_streamer():
    from .writing.request import GAP

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
    from .gpt.config import config_with_preset
    from .gpt.train import train

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
    from .data.corpus import resolve_poets
    from .data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(args.data, args.kind, args.vocab_size, resolve_poets(args.poets), args.max_chars)
    tokenizer.save(args.out)
    print(f"{args.kind} tokenizer with {tokenizer.vocab_size} tokens "
          f"({len(tokenizer.special_tokens)} special) written to {args.out}")
    return 0


def cmd_prepare_data(args) -> int:
    from .data.corpus import resolve_poets
    from .data.dataset import prepare_corpus
    from .data.tokenizer import load_tokenizer

    tokenizer = "char" if args.tokenizer == "char" else load_tokenizer(args.tokenizer)
    corpus = prepare_corpus(args.data, tokenizer, resolve_poets(args.poets), args.out, progress=not args.no_progress)
    counts = ", ".join(f"{name} {len(split.tokens):,} tokens in {split.n_poems:,} poems"
                       for name, split in corpus.splits.items())
    print(f"{args.out}: {counts}")
    return 0


def cmd_train_metre_classifier(args) -> int:
    import torch

    from .data.corpus import resolve_poets
    from .prosody.classifier import train_classifier

    torch.set_num_threads(args.threads)
    report = train_classifier(args.data, args.out, resolve_poets(args.poets), args.time_budget, seed=args.seed,
                              command_line=["persian-poetry", *sys.argv[1:]], max_steps=args.max_steps)
    print(f"metre classifier: val hemistich accuracy {report['best_val_hemistich_accuracy']:.4f}; "
          f"written to {args.out}")
    return 0


def cmd_train_poet_classifier(args) -> int:
    import torch

    from .judges.poet import train_poet_classifier

    torch.set_num_threads(args.threads)
    report = train_poet_classifier(args.data, args.out, args.time_budget, seed=args.seed, progress=not args.json,
                                   command_line=["persian-poetry", *sys.argv[1:]], max_steps=args.max_steps)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"poet classifier: {report['steps']} steps; written to {args.out}")
    for split in ("val", "test"):
        if split in report:
            r = report[split]
            print(f"{split} split: {r['poems']} poems, {r['hemistichs']} hemistichs; poem accuracy "
                  f"{r['poem_accuracy']:.2%} (mean over poets {r['poem_accuracy_mean_over_poets']:.2%}), hemistich "
                  f"accuracy {r['hemistich_accuracy']:.2%} (mean over poets {r['hemistich_accuracy_mean_over_poets']:.2%})")
    if "test" in report:
        print(f"{'poet':10s} {'poems':>6s} {'poem acc':>9s} {'hemistichs':>11s} {'hemi acc':>9s}  mistaken for")
        for poet, r in report["test"]["per_poet"].items():
            print(f"{poet:10s} {r['poems']:6d} {r['poem_accuracy']:9.2%} {r['hemistichs']:11d} "
                  f"{r['hemistich_accuracy']:9.2%}  {r['mistaken_for'] or '-'}")
    return 0


def cmd_scan(args) -> int:
    from .prosody.metres import show_pattern
    from .prosody.scan import scan

    if args.file == "-":
        text = sys.stdin.read()
    elif args.file:
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

    from .prosody.evaluate import evaluate_prosody

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


def cmd_build_lexicon(args) -> int:
    from .data.corpus import resolve_poets
    from .prosody.lexicon import build_lexicon

    size = build_lexicon(args.data, resolve_poets(args.poets), args.out)
    print(f"{size} words written to {args.out}")
    return 0


def cmd_build_style(args) -> int:
    from .writing.style import build_style

    path = build_style(args.data, args.model)
    print(f"style prior written to {path}")
    return 0


def cmd_evaluate_generation(args) -> int:
    from .gpt.inference import one_blas_thread
    from .judges.evaluate_generation import evaluate_generation, read_train_text
    from .writing.bundle import load_model

    one_blas_thread()  # for the whole command (see there)

    poetry = load_model(args.model)
    train = read_train_text(args.data)
    modes = [False, True] if args.compare else [args.free]
    reports = [evaluate_generation(poetry, args.data, n=args.poems, free=free, train=train, style=args.style,
                                   first_seed=args.first_seed, best_of=args.best_of) for free in modes]
    if args.out:
        Path(args.out).write_text(json.dumps(reports if args.compare else reports[0], ensure_ascii=False, indent=1),
                                  encoding="utf-8")
    for report in reports:
        summary = {k: v for k, v in report.items() if k != "poems_detail"}
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
            continue
        mode = "constrained" if report["constraints"] else "free (no constraints)"
        style = f"poet style {report['style']}" if report["style_prior"] else "no style prior"
        print(f"{report['poems']} poems, {report['hemistichs']} hemistichs, {mode}, {style}")
        for key in ("metre_share", "metre_top_share", "metre_classifier_share", "rhyme_share", "form_share",
                    "verbatim_share", "distinct_2", "repeat_share", "poet_share"):
            print(f"  {key:22s} {report[key]:.2%}")
        print(f"  longest shared run     {report['longest_shared_run']} characters")
        print(f"  seconds per poem       {report['seconds_mean']} (p95 {report['seconds_p95']}); "
              f"7-couplet ghazal {report['ghazal7_seconds_mean']}")
        ref = report["real_poems_reference"]
        print(f"  real test poems        metre {ref['metre_share']:.2%}, top metre {ref['metre_top_share']:.2%}, "
              f"classifier's metre {ref['metre_classifier_share']:.2%}, repeat {ref['repeat_share']:.2%} "
              f"({ref['poems']} poems: what the judges say of real verse)")
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from .data.corpus import resolve_poets
    from .gpt.evaluate import evaluate_file

    torch.set_num_threads(1)
    result = evaluate_file(args.data, args.model, split=args.split, limit=args.limit, batch_size=args.batch_size,
                           poets=resolve_poets(args.poets), quantize=args.quantize, mix=args.mix)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{result.bits_per_char:.4f} bits/char ({result.nats_per_char:.4f} nats/char) on "
              f"{result.poems} poem(s), {result.characters:,} characters, {result.tokens:,} tokens"
              + (" (mixed with the infini-gram)" if args.mix else ""))
    return 0


def cmd_tell_apart(args) -> int:
    from .gpt.inference import one_blas_thread
    from .judges.tell_apart import evaluate_controls, evaluate_tell_apart, pretrained_reader, real_couplet_pools
    from .writing.bundle import load_model

    one_blas_thread()  # for the whole command (see evaluate-generation); the judge trains on one torch thread
    progress = not args.no_progress
    poetry = load_model(args.model)
    pools = real_couplet_pools(args.data)  # the corpus read once for every run
    reader = pretrained_reader(args.data, progress=progress)  # and the reader loaded (or trained) once
    report = {"modes": {mode: evaluate_tell_apart(poetry, args.data, mode, args.train, args.test, progress=progress,
                                                  pools=pools, reader=reader)
                        for mode in args.mode or ["constrained"]}}
    if args.controls:
        report["controls"] = evaluate_controls(args.data, args.train, args.test, progress=progress, pools=pools,
                                               reader=reader)
    if args.out:
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    rows = [(f"real vs {mode}", result) for mode, result in report["modes"].items()]
    if args.controls:
        rows += [("control: real vs shuffled", report["controls"]["shuffled"]),
                 ("control: real vs real", report["controls"]["real_vs_real"])]
    for name, r in rows:
        low, high = r["accuracy_ci95"]
        print(f"{name:26s} {r['accuracy']:.1%} told apart (95% {low:.1%}-{high:.1%}; real {r['real_accuracy']:.1%}, "
              f"other {r['generated_accuracy']:.1%}) on {r['real_test']}+{r['generated_test']} held-out couplets, "
              f"trained on {r['real_train']}+{r['generated_train']} for {r['steps']} steps")
    print("50% = cannot be told apart; 100% = every couplet can")
    return 0


def cmd_export_hf(args) -> int:
    from .assets import DEFAULT_MODEL_DIR
    from .gpt.checkpoint import load_model_dir
    from .gpt.export_hf import export_hf, hf_architecture

    loaded = load_model_dir(args.model or DEFAULT_MODEL_DIR)
    out = export_hf(loaded, args.out)
    print(f"transformers checkpoint ({hf_architecture(loaded.model)} + tokenizer) written to {out}")
    return 0


def cmd_explain(args) -> int:
    from .explain import lesson
    from .gpt.inference import one_blas_thread
    from .gpt.sampling import Sampling
    from .writing.bundle import load_model

    one_blas_thread()  # for the whole command (see there)
    step, as_json = args.explain_command, args.json

    def show(result, text: str) -> None:
        print(json.dumps(result, ensure_ascii=False) if as_json else text)

    if step == "positional":
        table = lesson.positional_table(args.positions, args.dim)
        example = lesson.positional_example() if args.dim == 4 else None
        lines = [f"PE(pos, i) for {args.positions} positions x {args.dim} dimensions (unscaled):"]
        lines += [f"  pos {pos:3d} " + " ".join(f"{v:7.4f}" for v in row) for pos, row in enumerate(table)]
        show({"table": table, "example": example.to_dict() if example else None},
             "\n".join(lines + ([example.text()] if example else [])))
        if args.plot:
            from .explain.plots import plot_positional

            config = load_model(args.model).config
            plot_positional(lesson.positional_table(config.context_length, config.position_width), args.plot,
                            scale=1 / config.n_embd ** 0.5 if config.positional == "sinusoidal" else None,
                            rotary=config.positional == "rotary")
            print(f"heat map written to {args.plot}", file=sys.stderr)
        return 0
    if step == "attention" and args.example:
        examples = lesson.attention_lesson()
        show([e.to_dict() for e in examples], "\n\n".join(e.text() for e in examples))
        if args.plot:
            from .explain.plots import plot_attention_example

            print(f"figure written to {plot_attention_example(examples, args.plot)}", file=sys.stderr)
        return 0
    poetry = load_model(args.model)
    if step == "tokens":
        report = lesson.tokenize_text(poetry, args.text)
        show(report.to_dict(), report.text())
    elif step == "attention":
        trace = lesson.attention_trace(poetry, args.text)
        show(trace.to_dict(), trace.text(args.layer, args.head))
        if args.plot:
            from .explain.plots import plot_attention_trace

            paths = plot_attention_trace(trace, args.plot)
            print(f"{len(paths)} heat maps written to {args.plot}", file=sys.stderr)
    else:
        sampling = Sampling(args.temperature, args.top_k, args.top_p)  # a ValueError is a one-line error
        trace = lesson.generation_trace(poetry, args.poet, args.form, args.steps, sampling, args.seed, args.top)
        show(trace.to_dict(), trace.text())
    return 0




def cmd_serve(args) -> int:
    from .serve.app import serve
    from .writing.bundle import load_model

    print(f"serving on http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    serve(load_model(args.model), host=args.host, port=args.port, workers=args.workers, queue=args.queue,
          allowed_hosts=args.allowed_host)
    return 0


COMMANDS = {"generate": cmd_generate, "train": cmd_train, "train-tokenizer": cmd_train_tokenizer,
            "prepare-data": cmd_prepare_data,
            "evaluate": cmd_evaluate, "train-metre-classifier": cmd_train_metre_classifier, "scan": cmd_scan,
            "evaluate-prosody": cmd_evaluate_prosody, "evaluate-generation": cmd_evaluate_generation,
            "build-lexicon": cmd_build_lexicon, "train-poet-classifier": cmd_train_poet_classifier,
            "export-hf": cmd_export_hf, "tell-apart": cmd_tell_apart, "build-style": cmd_build_style,
            "explain": cmd_explain, "serve": cmd_serve}

def run() -> None:
    """The console command: `main`, then, for QUICK_EXIT_COMMANDS that succeeded, the process ends
    as soon as stdout and stderr are flushed (os._exit: no atexit handlers, no teardown); any
    other command, or a failure, exits as usual. `main` itself returns, for tests and callers."""
    argv = sys.argv[1:]
    status = main(argv)
    if status == 0 and argv and argv[0] in QUICK_EXIT_COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: let the usual exit report it
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
