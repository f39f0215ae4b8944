"""One `spark` entry point for every stage, and one way to fail: a single line naming the key or file, exit code 2
for bad input and 1 for a run that failed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval.cli import main, parser
from spark.engine.step import NonFiniteError
from spark.errors import BAD_INPUT, RUN_FAILED, run_command
from spark.pretrain.data import BadImageError
from helpers import counting_reads

REPO = Path(__file__).resolve().parents[1]
STAGE_ARGS = {  # the required arguments of each stage, beside --params
    "prepare": [],
    "pretrain": ["--out", "run"],
    "finetune": ["--init", "scratch", "--out", "run"],
    "detection": ["--init", "scratch", "--out", "run"],
    "motivation": ["--init", "scratch", "--out", "run"],
    "report": [],
    "estimate": [],
}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_spark_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in [*STAGE_ARGS, "visualize"])
    commands = next(action for action in parser()._actions if action.dest == "command").choices
    assert set(commands) == {*STAGE_ARGS, "visualize", "new-preset"}


@pytest.mark.parametrize("stage", STAGE_ARGS)
def test_every_stage_refuses_a_missing_params_file_with_one_line(stage, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([stage, "--params", "missing.yaml", *STAGE_ARGS[stage]]) == BAD_INPUT
    assert error_line(capsys) == f"spark {stage}: error: params file not found: missing.yaml"
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("stage, override, key", [
    ("prepare", "data.workers=0", "data.workers"),
    ("pretrain", "pretrain.mask_ratio=1.5", "pretrain.mask_ratio"),
    ("finetune", "finetune.nosuchkey=1", "finetune.nosuchkey"),
    ("detection", "detection.max_iter=0", "detection.max_iter"),
])
def test_a_bad_value_names_its_key_before_any_work(stage, override, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "configs/smoke.yaml", "params.yaml")
    assert main([stage, "--params", "params.yaml", *STAGE_ARGS[stage], override]) == BAD_INPUT
    assert f"spark {stage}: error: params: {key}:" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _empty_class_folders(root: Path) -> None:
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / "folders" / split / name).mkdir(parents=True)
    (root / "folders/train/cat/notes.txt").write_text("no image here")


@pytest.mark.parametrize("argv, setup, message", [
    (["pretrain", "--params", "tab.yaml", "--out", "run"], lambda root: (root / "tab.yaml").write_text(
        "pretrain:\n\tepochs: 1\n"), "tab.yaml: not valid YAML, line 2 column 1: found character '\\t' that cannot "
                                        "start any token"),
    (["pretrain", "--params", "params.yaml", "--out", "run", "pretrain.epochs=[1,"], None,
     "override 'pretrain.epochs=[1,': not valid YAML, line 1 column 4:"),
    (["pretrain", "--params", "params.yaml", "--out", "taken"], lambda root: (root / "taken").write_text(""),
     "--out taken: taken exists and is not a directory"),
    (["finetune", "--params", "params.yaml", "--init", "scratch", "--out", "taken/run"],
     lambda root: (root / "taken").write_text(""), "--out taken/run: taken exists and is not a directory"),
    (["report", "--params", "params.yaml", "--out", "taken"], lambda root: (root / "taken").write_text(""),
     "--out taken: taken exists and is not a directory"),
    (["finetune", "--params", "params.yaml", "--init", "scratch", "--out", "run", "finetune.data=folders"],
     _empty_class_folders, "params: finetune.data: folders/train: Found no valid file for the classes cat, dog."),
], ids=["tab-in-params", "unclosed-override", "out-is-a-file", "out-under-a-file", "report-out-is-a-file",
        "class-folders-without-images"])
def test_malformed_files_are_one_line_naming_them(argv, setup, message, tmp_path, capsys, monkeypatch):
    """A tab in the YAML, an --out where a file stands, image folders without images: one line, exit 2, nothing
    written (instead of a parser's, os's or torchvision's traceback)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "configs/smoke.yaml", "params.yaml")
    if setup:
        setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == BAD_INPUT
    assert error_line(capsys).startswith(f"spark {argv[0]}: error: {message}")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("stage, section", [("pretrain", "pretrain"), ("finetune", "finetune"),
                                            ("detection", "detection")])
@pytest.mark.parametrize("visible", [0, 1])
def test_a_gpu_job_without_its_gpus_stops_before_any_work(stage, section, visible, tmp_path, capsys, monkeypatch):
    """``resources.<stage>.gpus: 2`` on a machine that shows fewer GPUs: one line naming the setting, what was asked
    and what was found, exit 2, nothing written and no torchrun started (instead of training on the CPU)."""
    import eval.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.device_count", lambda: visible)
    monkeypatch.setattr(eval.cli.os, "execvpe", lambda *args: pytest.fail(f"torchrun started: {args}"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    shutil.copy(REPO / "configs/smoke.yaml", "params.yaml")
    assert main([stage, "--params", "params.yaml", *STAGE_ARGS[stage], f"resources.{section}.gpus=2"]) == BAD_INPUT
    assert error_line(capsys).startswith(
        f"spark {stage}: error: params: resources.{section}.gpus: 2 GPU(s) asked for, found {visible}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("cuda", [False, True])
def test_only_cpu_training_keeps_freed_host_memory(cuda, tmp_path, monkeypatch):
    """glibc's no-mmap/no-trim setting pays for CPU steps; a GPU job's host memory is its loader's batches."""
    import spark.engine
    import spark.pretrain

    kept, runs = [], []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(spark.engine, "retain_freed_memory", lambda: kept.append(True))
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    monkeypatch.setattr(spark.pretrain, "pretrain", lambda *args, **kwargs: runs.append(args))
    shutil.copy(REPO / "configs/smoke.yaml", "params.yaml")
    assert main(["pretrain", "--params", "params.yaml", *STAGE_ARGS["pretrain"]]) == 0
    assert len(runs) == 1 and kept == ([] if cuda else [True])


@pytest.mark.parametrize("content, reason", [
    (b"\x80\x02garbage" * 10, "cannot be read as a weights-only torch checkpoint (Unsupported operand"),
    (b"", "cannot be read as a weights-only torch checkpoint (EOFError: empty or truncated file)"),
])
def test_an_unreadable_checkpoint_is_one_line_naming_the_file(content, reason, tmp_path, capsys):
    (tmp_path / "weights.pth").write_bytes(content)
    image = tmp_path / "a.png"
    assert main(["visualize", str(tmp_path / "weights.pth"), str(image), "--out", str(tmp_path / "fig.png")]) == 2
    assert error_line(capsys).startswith(f"spark visualize: error: {tmp_path / 'weights.pth'}: {reason}")


def test_report_names_the_first_missing_or_corrupt_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "configs/smoke.yaml", "params.yaml")
    first = Path("runs/smoke/pretrain/resnet18/sparse/seed0/metrics.json")
    with counting_reads(tmp_path / "params.yaml") as reads:
        assert main(["report", "--params", "params.yaml"]) == BAD_INPUT
    assert len(reads) == 1, reads  # the job reads its params once
    assert error_line(capsys) == f"spark report: error: {first}: missing; run the pretrain stage first"
    first.parent.mkdir(parents=True)
    first.write_text('{"loss": ')  # a run killed mid-write by a tool without atomic writes
    assert main(["report", "--params", "params.yaml"]) == BAD_INPUT
    assert error_line(capsys).startswith(f"spark report: error: {first}: unreadable (")
    first.write_text(json.dumps([1, 2]))
    assert main(["report", "--params", "params.yaml"]) == BAD_INPUT
    assert error_line(capsys) == f"spark report: error: {first}: expected a JSON object, got list"
    assert not Path("results").exists()


@pytest.mark.parametrize("error, code", [
    (NonFiniteError("loss is nan at epoch 2/3, iteration 2/4; stopping before the optimizer step"), RUN_FAILED),
    (BadImageError("cannot read image a.png: truncated"), BAD_INPUT),
])
def test_exit_codes_tell_bad_input_from_a_failed_run(error, code, capsys):
    def fail():
        raise error

    assert run_command("spark pretrain", fail) == code
    assert error_line(capsys) == f"spark pretrain: error: {error}"


def test_a_data_loader_worker_error_keeps_only_its_own_line(capsys):
    wrapped = BadImageError("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                            "call last):\n  File \"x.py\", line 1\nspark.pretrain.data.BadImageError: cannot read "
                            "image a.png: truncated\n")

    def fail():
        raise wrapped

    assert run_command("spark pretrain", fail) == BAD_INPUT
    assert error_line(capsys) == "spark pretrain: error: cannot read image a.png: truncated"


def test_the_installed_console_script_dispatches_with_the_same_exit_code(tmp_path):
    result = subprocess.run([str(Path(sys.executable).with_name("spark")), "finetune", "--params", "missing.yaml",
                             "--init", "scratch", "--out", "run"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == BAD_INPUT
    assert result.stderr.strip() == "spark finetune: error: params file not found: missing.yaml"
