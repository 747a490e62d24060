"""One run folder, one writer: a second process is refused while the first lives, a dead one's lock is taken over."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mtl_keras_app import run_lock, tuning, workflow
from mtl_keras_app.ablation import ReproduceSettings, reproduce
from mtl_keras_app.config import ExperimentConfig
from mtl_keras_app.run_lock import RunFolderLocked, run_folder_lock

REPO = str(Path(__file__).resolve().parents[2])
MODULE = run_lock.__file__

# Loads mtl_keras_app/run_lock.py on its own (no TensorFlow: starts in a fraction of a second).
LOAD = textwrap.dedent(
    """
    import importlib.util, os, sys, time
    spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
    run_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_lock)
    """
)
# Holds the lock of FOLDER, says so in READY, and waits for STOP (or a SIGKILL).
HOLD = LOAD + textwrap.dedent(
    """
    with run_lock.run_folder_lock(sys.argv[2]):
        open(sys.argv[3], "w").close()
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.05)
    """
)
# Tries the lock of FOLDER once: prints "took" or the refusal.
TRY = LOAD + textwrap.dedent(
    """
    try:
        with run_lock.run_folder_lock(sys.argv[2]):
            print("took")
    except run_lock.RunFolderLocked as err:
        print("refused:", err)
    """
)


class Holder:
    """Another process holding a folder's lock until `stop` or `kill`."""

    def __init__(self, tmp_path: Path, folder: Path):
        script = tmp_path / "holder.py"
        script.write_text(HOLD)
        self.ready, self.stop_file = tmp_path / "ready", tmp_path / "stop"
        self.process = subprocess.Popen(
            [sys.executable, str(script), MODULE, str(folder), str(self.ready), str(self.stop_file)]
        )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.process.poll() is None, "the holder died"
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.05)
        self.pid = self.process.pid

    def stop(self):
        self.stop_file.touch()
        assert self.process.wait(timeout=30) == 0

    def kill(self):
        self.process.kill()  # SIGKILL: no cleanup runs
        self.process.wait(timeout=30)


def _try(tmp_path: Path, folder: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "try.py"
    script.write_text(TRY)
    return subprocess.run(
        [sys.executable, str(script), MODULE, str(folder)], capture_output=True, text=True, timeout=60
    )


def _cli(args, cache) -> subprocess.CompletedProcess:
    env = dict(os.environ, MTL_KERAS_CACHE=cache, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "mtl_keras_app.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # `make test-slow`: 25 s of the fresh-clone CI run on 2 AVX2 EPYC cores of 2026-12-07 (39 min in all, over 30)
def test_a_second_run_is_refused_while_the_first_lives_and_takes_over_once_it_is_killed(
    tmp_path, tiny_config_file, glyph_cache
):
    run_dir = tmp_path / "run"
    holder = Holder(tmp_path, run_dir)
    info = json.loads((run_dir / ".lock").read_text())
    assert (
        info["pid"] == holder.pid
        and info["host"]
        and info["started"]
        and info["argv"][0].endswith("holder.py")
    )

    refused = _cli(["run", "--config", tiny_config_file, "--run-dir", str(run_dir)], glyph_cache)
    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith(f"mtl-keras run: error: '{run_dir}' is in use by process {holder.pid} on host ")
    assert f"started {info['started']}, running `{shlex.join(info['argv'])}`." in message
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written

    holder.kill()
    assert json.loads((run_dir / ".lock").read_text())["pid"] == holder.pid  # left behind by the dead
    taken = _cli(
        [
            "pretrain",
            "--config",
            tiny_config_file,
            "--set",
            "pretrain_epochs=0",
            "--run-dir",
            str(run_dir),
            "--quiet",
        ],
        glyph_cache,
    )
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert f"{run_dir}: taking over the lock of dead process {holder.pid} on host " in taken.stderr
    assert (run_dir / "pretrained_backbone.weights.h5").exists()
    assert (run_dir / ".lock").read_text() == ""  # released at the end: the next one takes it silently
    assert _try(tmp_path, run_dir).stdout == "took\n"


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost(tmp_path):
    folder = tmp_path / "run"
    with run_folder_lock(str(folder)):
        with run_folder_lock(str(folder / ".." / "run")):  # the same folder, spelt otherwise
            assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        refused = _try(tmp_path, folder).stdout
        assert refused.startswith(f"refused: '{folder}' is in use by process {os.getpid()} "), refused
    assert (folder / ".lock").read_text() == ""
    assert _try(tmp_path, folder).stdout == "took\n"


def test_a_stopped_holder_releases_and_an_exception_releases_too(tmp_path, capsys):
    folder = tmp_path / "run"
    Holder(tmp_path, folder).stop()
    with pytest.raises(KeyError), run_folder_lock(str(folder)):
        raise KeyError("boom")
    with run_folder_lock(str(folder)):
        pass
    assert "taking over" not in capsys.readouterr().err


def test_a_lock_file_nobody_holds_is_taken_over_with_a_line(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = {
        "pid": 4242,
        "host": "elsewhere",
        "started": "2026-12-01T10:00:00+00:00",
        "argv": ["mtl-keras", "run"],
    }
    (folder / ".lock").write_text(json.dumps(dead))
    with run_folder_lock(str(folder)):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert capsys.readouterr().err == (
        f"{folder}: taking over the lock of dead process 4242 on host elsewhere "
        "(started 2026-12-01T10:00:00+00:00), which ended without releasing it\n"
    )


def test_a_holder_that_has_not_written_yet_is_still_refused():
    assert "another process, which is just starting" in str(RunFolderLocked("runs/a", {}))


CONFIG = ExperimentConfig(image_size=16, widths=(4, 4, 4, 4), shots=(1,))
ENTRY_POINTS = {
    "run_workflow": lambda d: workflow.run_workflow(CONFIG, d),
    "pretrain_stage": lambda d: workflow.pretrain_stage(CONFIG, d),
    "meta_train_stage": lambda d: workflow.meta_train_stage(CONFIG, d),
    "evaluate_stage": lambda d: workflow.evaluate_stage(CONFIG, d),
    "export_stage": lambda d: workflow.export_stage(CONFIG, d),
    "run_tuning": lambda d: tuning.run_tuning(CONFIG, d),
    "reproduce": lambda d: reproduce(ReproduceSettings(CONFIG), d),
}


@pytest.fixture(scope="module")
def held_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("held")
    holder = Holder(tmp, tmp / "run")
    yield tmp / "run", holder.pid
    holder.stop()


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_every_entry_point_that_writes_a_run_folder_takes_the_lock(name, held_folder):
    folder, pid = held_folder
    with pytest.raises(RunFolderLocked, match=f"is in use by process {pid} "):
        ENTRY_POINTS[name](str(folder))
    assert [p.name for p in folder.iterdir() if p.name != "worker-1"] == [".lock"]  # nothing written


def test_a_distributed_tuning_search_shares_its_folder(held_folder, monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    with pytest.raises(ValueError, match="Unknown tuner"):  # past the lock, stopped at the next check
        tuning.run_tuning(CONFIG, str(held_folder[0]), tuner="nonesuch")


def test_each_multi_worker_process_locks_the_folder_it_writes(tmp_path, held_folder, monkeypatch):
    """A non-chief worker writes (and so locks) RUN_DIR/worker-<i>, not the chief's folder."""
    folder, _ = held_folder
    worker = object()
    real = workflow.output_dir
    monkeypatch.setattr(
        workflow.run_folder,
        "output_dir",
        lambda run_dir, strategy: real(run_dir, None) + ("/worker-1" if strategy is worker else ""),
    )

    def stop(config, strategy):
        assert json.loads((folder / "worker-1" / ".lock").read_text())["pid"] == os.getpid()
        raise RuntimeError("past the lock")

    monkeypatch.setattr(workflow.stages, "check_strategy", stop)
    with pytest.raises(RuntimeError, match="past the lock"):
        workflow.pretrain_stage(CONFIG, str(folder), strategy=worker)
    with pytest.raises(RunFolderLocked):
        workflow.pretrain_stage(CONFIG, str(folder), strategy=None)
