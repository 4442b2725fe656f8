"""Data parallelism: launcher detection, sharded validation sums, and a real 2-worker msrun run on CPU."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvt_ms.train.distributed import DistributedContext, DistributedError, launched_distributed, weights_digest

from .script_loader import script_env
from .test_train_cli import SCRIPT, base_args, make_image_folder

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_launchers_are_detected_from_the_environment():
    assert not launched_distributed({})
    assert launched_distributed({"MS_WORKER_NUM": "2", "MS_ROLE": "MS_WORKER"})  # msrun
    assert launched_distributed({"RANK_TABLE_FILE": "/x/hccl.json", "RANK_SIZE": "8"})  # Ascend rank table
    assert not launched_distributed({"RANK_ID": "0"})


def test_single_process_context_is_the_identity():
    ctx = DistributedContext()
    assert not ctx.enabled and ctx.is_main and ctx.num_shards is None and ctx.shard_id is None
    np.testing.assert_array_equal(ctx.all_reduce_sum([1, 2.5]), [1, 2.5])
    np.testing.assert_array_equal(ctx.all_gather([3, 4]), [[3, 4]])
    with pytest.raises(DistributedError, match="exactly"):
        ctx.all_reduce_sum([2 ** 24], exact_ints=True)
    with pytest.raises(DistributedError, match="exactly"):
        ctx.all_reduce_sum([0.5], exact_ints=True)


def _odd_val_folder(root: Path, flat: bool = False) -> Path:
    """4 classes; val holds 2 + 1 + 1 + 1 = 5 images (not divisible by 2 workers)."""
    make_image_folder(root, train_per_class=2, val_per_class=2, flat=flat)
    for name in ("b", "c", "d"):
        (root / "val" / name / "001.png").unlink()
    return root


def test_sharded_validation_counts_add_up_to_the_whole_split(tmp_path):
    """What each rank of a 2-worker run evaluates (MindData shards minus their padding) sums to the split."""
    import mindspore as ms

    from dvt_ms import create_model
    from dvt_ms.data import check_image_folder, create_eval_dataset
    from dvt_ms.train.validation import counts_to_result, evaluate_shard

    root = _odd_val_folder(tmp_path / "data")
    info = check_image_folder(root, "val", 4)
    ms.set_seed(5)
    net = create_model("dvt_deit_small", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, image_size=64,
                       num_classes=4)
    whole = evaluate_shard(net, create_eval_dataset(info.root, 2, 64, info=info), 2, 3)
    shards = [evaluate_shard(net, create_eval_dataset(info.root, 2, 64, num_shards=2, shard_id=r, info=info), 2, 3)
              for r in range(2)]
    assert [s[0] for s in shards] == [3, 2] and whole[0] == 5
    np.testing.assert_array_equal(shards[0] + shards[1], whole)  # what all_reduce_sum adds up
    result = counts_to_result(shards[0] + shards[1], 3, 4)
    assert result.num_images == 5 and all(v * 5 / 100 == pytest.approx(round(v * 5 / 100)) for v in result.top1)


def _msrun() -> str:
    local = Path(sys.executable).parent / "msrun"
    found = str(local) if local.is_file() else shutil.which("msrun")
    if not found:
        pytest.skip("msrun is not on PATH (it is installed with MindSpore); the 2-worker test needs it")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entries(path: Path) -> dict:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if not isinstance(v, str)}


def _records(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def test_two_msrun_workers_match_one_process_on_the_combined_batch(tmp_path):
    """2 CPU workers x batch 4 vs 1 process x batch 8 on the same 8 training images (one step per epoch).

    No augmentation and flat images (MindData's RandomResizedCrop stays random even with scale [1, 1],
    and each pipeline draws its own random numbers, so only crop-invariant images make the two runs see
    the same pixels), no drop path, SGD (its update is linear in the gradient, so the only difference
    left is the order of floating-point sums). Both ranks must end bit-identical; validation over an
    odd number of images must count every image once.
    """
    _msrun()
    data = _odd_val_folder(tmp_path / "data", flat=True)
    common = dict(epochs=EPOCHS, opt="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, seed=11)
    env = script_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHON=sys.executable, MASTER_PORT=str(_free_port()), LOG_DIR=str(tmp_path / "logs"),
               CLUSTER_TIME_OUT="120", PYTHONUNBUFFERED="1")
    dist = subprocess.run(["bash", str(ROOT / "scripts" / "run_msrun.sh"), "2"]
                          + base_args(data, tmp_path / "dist", batch_size=4, **common),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    logs = {r: (tmp_path / "logs" / f"worker_{r}.log").read_text() for r in range(2)
            if (tmp_path / "logs" / f"worker_{r}.log").is_file()}
    assert dist.returncode == 0, dist.stdout[-2000:] + dist.stderr[-2000:] + "".join(
        f"\n--- worker {r}\n{text[-3000:]}" for r, text in logs.items())
    single = subprocess.run([sys.executable, str(SCRIPT)] + base_args(data, tmp_path / "single", batch_size=8,
                                                                      **common),
                            cwd=tmp_path, capture_output=True, text=True, timeout=180, env=script_env())
    assert single.returncode == 0, single.stderr[-3000:]

    # both ranks: data parallel, and bit-identical weights after every epoch (checked across ranks too)
    digests = {}
    for rank, text in logs.items():
        assert f"data parallel: rank {rank} of 2" in text
        digests[rank] = re.findall(rf"rank {rank}: weights identical on all 2 ranks after epoch \d+ \(digest (\w+)\)",
                                   text)
        assert len(digests[rank]) == EPOCHS, text[-3000:]
    assert digests[0] == digests[1]
    assert "step 1/1" in logs[0] and "step 1/1" not in logs[1]  # progress lines come from rank 0 only
    dist_records, single_records = _records(tmp_path / "dist"), _records(tmp_path / "single")
    assert [r["weights_digest"] for r in dist_records] == digests[0]

    # the same training as one process on the combined batch of 8
    final_dist = _entries(tmp_path / "dist" / f"epoch_{EPOCHS:04d}.ckpt")
    final_single = _entries(tmp_path / "single" / f"epoch_{EPOCHS:04d}.ckpt")
    assert sorted(final_dist) == sorted(final_single)
    for name, value in final_single.items():
        np.testing.assert_allclose(final_dist[name], value, rtol=1e-4, atol=2e-6, err_msg=name)
    moved = np.abs(final_single["stages.2.head.weight"] - _entries(tmp_path / "single" / "epoch_0001.ckpt")
                   ["stages.2.head.weight"]).max()
    assert moved > 1e-3  # the comparison is not between untrained weights

    # validation over 5 images with 2 workers (3 + 2): every image counted once, same accuracy
    for d, s in zip(dist_records, single_records):
        assert d["val_images"] == s["val_images"] == 5
        assert d["steps"] == s["steps"] == 1 and d["global_step"] == s["global_step"]
        np.testing.assert_allclose(d["val_top1"], s["val_top1"])
        np.testing.assert_allclose(d["train_loss"], s["train_loss"], rtol=1e-4)


def test_weights_digest_sees_every_change():
    import mindspore as ms

    from dvt_ms import create_model

    net = create_model("deit_small", embed_dim=32, depth=1, num_heads=2, mlp_ratio=1.0, image_size=32,
                       num_classes=3)
    before = weights_digest(net)
    param = net.get_parameters().__next__()
    param.set_data(ms.Tensor(param.asnumpy() + 1e-7))
    assert weights_digest(net) != before
