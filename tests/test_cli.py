import json
import subprocess
import sys

from persian_poetry.cli import main


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "persian_poetry.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("generate", "train", "train-tokenizer", "evaluate"):
        assert command in result.stdout


def test_generate_streams_couplets_one_per_line(tiny_model_dir):
    result = run_cli("generate", "--model", str(tiny_model_dir), "--couplets", "4", "--seed", "1", "--free")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 4
    assert all("      " in line for line in lines)  # the gap between the two hemistichs
    again = run_cli("generate", "--model", str(tiny_model_dir), "--couplets", "4", "--seed", "1", "--json", "--free")
    poem = json.loads(again.stdout)
    assert [f"{a}      {b}" for a, b in poem["couplets"]] == [line.strip() for line in lines]


def test_unknown_poet_is_a_one_line_error(tiny_model_dir, capsys):
    code = main(["generate", "--model", str(tiny_model_dir), "--poet", "nobody"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown poet 'nobody'; choose from: hafez, saadi" in err
    assert main(["generate", "--model", str(tiny_model_dir / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_evaluate_json_and_train_tokenizer(tiny_model_dir, corpus_path, tmp_path, capsys):
    assert main(["evaluate", "--data", str(corpus_path), "--model", str(tiny_model_dir), "--split", "all",
                 "--limit", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["poems"] == 20 and result["characters"] > 1000 and 1 < result["bits_per_char"] < 8
    out = tmp_path / "bpe.json"
    assert main(["train-tokenizer", "--data", str(corpus_path), "--poets", "all", "--vocab-size", "300",
                 "--out", str(out)]) == 0
    from persian_poetry.data.tokenizer import load_tokenizer

    tok = load_tokenizer(out)
    assert tok.kind == "bpe" and tok.vocab_size == 300 and "<|poet:hafez|>" in tok.special_tokens


def test_generate_in_a_metre_and_rhyme_from_the_command_line():
    result = run_cli("generate", "--metre", "رمل مثمن مخبون محذوف", "--rhyme", "ار", "--couplets", "2", "--seed", "1",
                     "--json")
    assert result.returncode == 0, result.stderr
    poem = json.loads(result.stdout)
    assert poem["metre"] == 7 and poem["rhyme"] == "ار" and len(poem["couplets"]) == 2
    assert poem["constraints"]["qafiya"] == "ار"
    listing = run_cli("generate", "--list-metres")
    assert listing.returncode == 0 and "رمل مثمن مخبون محذوف" in listing.stdout
    assert len(listing.stdout.splitlines()) > 20
    ambiguous = run_cli("generate", "--metre", "رمل")
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr and "Traceback" not in ambiguous.stderr


def _run_with_teardown_marker(*args):
    """The console command's `run` in a fresh process, with an atexit handler that says whether the
    interpreter's usual exit ran."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('[teardown]'))\n"
            f"sys.argv = ['persian-poetry', *{list(args)!r}]\n"
            "from persian_poetry.cli import run\n"
            "run()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)


def test_a_poem_ends_its_process_without_teardown_and_loses_no_output(tiny_model_dir):
    args = ["generate", "--model", str(tiny_model_dir), "--couplets", "3", "--seed", "2", "--free", "--json"]
    quick = _run_with_teardown_marker(*args)
    assert quick.returncode == 0, quick.stderr
    assert "[teardown]" not in quick.stderr  # os._exit once the output was flushed
    poem = json.loads(quick.stdout)  # the whole JSON came through the pipe
    assert poem["couplets"] and poem["couplets"] == json.loads(run_cli(*args).stdout)["couplets"]


def test_a_failing_or_slow_command_exits_the_usual_way(tiny_model_dir):
    failed = _run_with_teardown_marker("generate", "--model", str(tiny_model_dir), "--poet", "nobody")
    assert failed.returncode == 2 and "unknown poet" in failed.stderr and "[teardown]" in failed.stderr
    explained = _run_with_teardown_marker("explain", "tokens", "دل")  # not one of QUICK_EXIT_COMMANDS
    assert explained.returncode == 0 and "[teardown]" in explained.stderr


def test_a_reader_that_goes_away_is_no_error(tiny_model_dir):
    process = subprocess.Popen([sys.executable, "-m", "persian_poetry.cli", "generate", "--model", str(tiny_model_dir),
                                "--couplets", "2", "--seed", "1", "--free"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # as `persian-poetry generate | head -0` would, before the first line
    err = process.stderr.read()
    assert process.wait(timeout=300) == 141
    assert err == ""
