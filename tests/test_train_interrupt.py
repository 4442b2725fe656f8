"""Stop signals (first: graceful, second: at once) and the one-run-per-folder lock, without training."""
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dvt_ms.train.lock import LOCK_NAME, OutputDirInUse, RunLock

ROOT = Path(__file__).resolve().parents[1]
INTERRUPT = ROOT / "dvt_ms" / "train" / "interrupt.py"
LOCK = ROOT / "dvt_ms" / "train" / "lock.py"


def _standalone(path: Path, body: str) -> str:
    """A script that loads one of the package's stdlib-only modules by path (no MindSpore start-up)."""
    return textwrap.dedent(f"""
        import importlib.util, os, signal, sys, time
        spec = importlib.util.spec_from_file_location("mod", {str(path)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    """) + textwrap.dedent(body)


@pytest.mark.parametrize("routed, signum, status", [(False, signal.SIGTERM, -signal.SIGTERM),
                                                    (False, signal.SIGINT, -signal.SIGINT),
                                                    (True, signal.SIGINT, 130)])
def test_first_signal_is_recorded_and_a_second_stops_at_once(routed, signum, status):
    body = f"""
        if {routed}:
            mod.route_sigint_to_thread()
        with mod.StopSignals() as stop:
            os.kill(os.getpid(), {int(signum)})
            deadline = time.time() + 10
            while not stop.requested and time.time() < deadline:
                time.sleep(0.01)
            print("first", stop.signum, flush=True)
            os.kill(os.getpid(), {int(signum)})
            time.sleep(10)
        print("not stopped", flush=True)
    """
    result = subprocess.run([sys.executable, "-c", _standalone(INTERRUPT, body)], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split() == ["first", str(int(signum))], result.stdout + result.stderr
    assert result.returncode == status, result.stderr


def test_interrupted_exit_status():
    from dvt_ms.train.interrupt import TrainingInterrupted

    assert TrainingInterrupted("x", signal.SIGINT).exit_status == 130
    assert TrainingInterrupted("x", signal.SIGTERM).exit_status == 143


def test_a_live_lock_is_refused_naming_the_folder_and_the_owner(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _standalone(LOCK, f"""
        lock = mod.RunLock({str(out)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.time()
        with pytest.raises(OutputDirInUse, match=rf"{out} is in use by another training run \(pid {holder.pid} on "):
            RunLock(out).acquire()
        assert time.time() - start < 1  # refused at once, not after a wait
        owner = json.loads((out / LOCK_NAME).read_text())
        assert owner["pid"] == holder.pid  # the refused attempt did not touch the owner's file
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_warning_and_release_restores_the_folder(tmp_path, caplog):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "node-7", "started": 0}))
    with caplog.at_level(logging.WARNING):
        lock = RunLock(out).acquire()
    assert f"taking over the lock left by pid {int(dead.stdout)} on node-7" in caplog.text
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert list(out.iterdir()) == []
    fresh = tmp_path / "fresh"
    RunLock(fresh).acquire().release()  # a folder the lock created is removed again while still empty
    assert not fresh.exists()
