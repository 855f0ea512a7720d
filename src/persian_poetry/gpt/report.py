"""The report of a training run: what was run, on what, and how well it did (JSON, Markdown, PNG)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def git_commit() -> str | None:
    """The checkout's commit (with -dirty when tracked files changed); in a copy without .git (a rented
    machine), $PERSIAN_POETRY_COMMIT, which whoever copied it sets."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = dirty = ""
    if commit:
        return commit + ("-dirty" if dirty else "")
    return os.environ.get("PERSIAN_POETRY_COMMIT") or None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hardware(device: torch.device, world_size: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": str(torch.__version__),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
            "processes": world_size}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return info


def weights_digest(model) -> str:
    raw = getattr(model, "module", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(raw.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_report(cfg, command_line, model, final, history, tokens_seen, steps, elapsed, data_hash, poets,
                 device, world_size, commit: str | None, legs: list[dict] | None = None) -> dict:
    """`commit`: `git_commit()` taken when training started (a commit made during a long run must not be
    credited with it)."""
    raw = getattr(model, "module", model)
    return {
        "created": now(),
        "command_line": command_line if command_line is not None else sys.argv,
        "seed": cfg.seed,
        "git_commit": commit,
        "data": {"path": cfg.data, "sha256": data_hash, "poets": poets},
        "config": asdict(cfg),
        "model": {**raw.config.to_dict(), "parameters": raw.num_parameters()},
        "hardware": hardware(device, world_size),
        "steps": steps,
        "tokens_seen": tokens_seen,
        "train_seconds": round(elapsed, 1),
        "final_val": final.to_dict(),
        "history": history,
        "legs": legs or [],
    }


def summary(report: dict) -> dict:
    return {k: report[k] for k in ("created", "command_line", "seed", "git_commit", "steps", "tokens_seen",
                                   "train_seconds", "final_val")}


def write_report(directory: str | Path, report: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    (directory / "report.md").write_text(markdown(report), encoding="utf-8")
    plot_history(report["history"], directory / "loss.png", report.get("config", {}).get("eval_poems"))


def markdown(report: dict) -> str:
    m, hw, final = report["model"], report["hardware"], report["final_val"]
    lines = [
        "# Training report", "",
        f"- Command: `{' '.join(report['command_line'])}`",
        f"- Seed: {report['seed']}; git commit: {report['git_commit']}",
        f"- Data: `{report['data']['path']}` (sha256 {report['data']['sha256'][:16]}...)",
        f"- Poets ({len(report['data']['poets'])}): {', '.join(report['data']['poets']) or 'n/a (plain text)'}",
        f"- Model: {m['parameters']:,} parameters; {m['n_layer']} layers, {m['n_head']} heads, "
        f"{m['n_embd']} wide, context {m['context_length']}, {m['positional']} positions, vocab {m['vocab_size']}",
        f"- Hardware: {hw.get('gpu') or hw.get('cpu', '?')}; {hw['processes']} process(es), "
        f"{hw['torch_threads']} torch thread(s); torch {hw['torch']}",
        f"- Trained {report['steps']:,} steps, {report['tokens_seen']:,} tokens, {report['train_seconds'] / 60:.1f} min",
        f"- **Final validation: {final['bits_per_char']:.4f} bits/char ({final['nats_per_char']:.4f} nats/char) "
        f"over {final['poems']} poem(s), {final['characters']:,} characters**",
        "", "| step | tokens | minutes | train loss (nats/token) | val bits/char |", "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {h['step']} | {h['tokens']:,} | {h['elapsed'] / 60:.1f} | {h['train_loss']:.4f} | "
              f"{h['val_bits_per_char']:.4f} |" for h in report["history"]]
    if report.get("legs"):
        lines += ["", "## Legs (each run of `train`; `--resume` adds one)", "",
                  "| leg | phase | steps | tokens | minutes | hardware | val bits/char at its end |",
                  "|---:|---|---|---:|---:|---|---:|"]
        for leg in report["legs"]:
            hw_leg = leg.get("hardware", {})
            where = f"{hw_leg.get('gpu') or hw_leg.get('cpu', '?')}, {hw_leg.get('torch_threads', '?')} thread(s)"
            val = leg.get("val_bits_per_char")
            lines.append(f"| {leg['leg']} | {leg['phase']} | {leg['start_step']}-{leg.get('end_step', '?')} | "
                         f"{leg.get('tokens', 0):,} | {leg.get('wall_seconds', 0) / 60:.1f} | {where} | "
                         f"{'-' if val is None else f'{val:.4f}'} |")
    if "rank_weight_sha256" in report:
        lines += ["", f"DDP ranks' final weight sha256: {', '.join(d[:12] for d in report['rank_weight_sha256'])}"]
    return "\n".join(lines) + "\n"


def plot_history(history: list[dict], path: Path, eval_poems: int | None = None) -> None:
    """Validation bits/char against tokens. The last point, the whole val split at the end, is drawn
    apart from the line of the periodic validations, which score only the first `eval_poems` poems
    and so sit lower or higher by the choice of poems, not by training."""
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if history:
        tokens = [h["tokens"] / 1e6 for h in history]
        bits = [h["val_bits_per_char"] for h in history]
        periodic = f"validation bits/char, first {eval_poems} val poems" if eval_poems else "validation bits/char"
        ax.plot(tokens[:-1], bits[:-1], marker="o", ms=3, label=periodic)
        ax.plot(tokens[-1:], bits[-1:], marker="D", ms=6, linestyle="none", label="the whole val split, at the end")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
