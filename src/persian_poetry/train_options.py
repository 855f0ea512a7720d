"""The `train` command's options, without importing torch (so `--help` stays fast).

Kept next to `TrainConfig` by a test that checks both name the same fields.
"""

TRAIN_OPTIONS: dict[str, tuple[type, str]] = {
    "data": (str, "corpus: Ganjoor-schema JSONL(.gz), or a .txt split 90/10 by position"),
    "out_dir": (str, "run directory: checkpoint.pt and model/ (default runs/default)"),
    "poets": (str, "'classical' (default), 'all', or comma-separated poet slugs"),
    "tokenizer": (str, "'char' or a tokenizer JSON from train-tokenizer"),
    "n_layer": (int, "transformer blocks"),
    "n_head": (int, "attention heads per block"),
    "n_embd": (int, "embedding width"),
    "context_length": (int, "token limit of the model"),
    "dropout": (float, "dropout rate of embeddings and residual branches"),
    "attention_dropout": (float, "dropout rate of attention weights (slow on a CPU)"),
    "positional": (str, "'sinusoidal', 'learned' or 'rotary'"),
    "batch_size": (int, "sequences per step (per process)"),
    "learning_rate": (float, "peak learning rate"),
    "min_learning_rate": (float, "learning rate at the end of the cosine decay"),
    "warmup_steps": (int, "linear warm-up steps"),
    "max_steps": (int, "stop after this many steps"),
    "time_budget": (float, "stop after this many seconds of training (the schedule fits itself to it)"),
    "weight_decay": (float, "AdamW weight decay of matrices"),
    "grad_clip": (float, "gradient norm clip"),
    "eval_interval": (int, "steps between validations"),
    "eval_poems": (int, "validation poems scored at each interval"),
    "checkpoint_interval": (int, "steps between checkpoints"),
    "seed": (int, "random seed"),
    "device": (str, "'auto', 'cpu', 'cuda', 'cuda:1', ..."),
    "threads": (int, "torch CPU threads"),
    "cache_dir": (str, "where encoded corpora are cached (default ~/.cache/persian-poetry)"),
    "resume": (bool, "continue from out_dir/checkpoint.pt"),
}
