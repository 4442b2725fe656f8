"""The GPU/Ascend compile budget (dvt_ms.utils.gears): the EViT keep-rate schedule and the engine's buckets
snap to a bounded set of gears. (The engine's per-stage graph count, ``compiled_graphs()``, is checked in
test_infer.py; a training run's count in test_train_cli.py.)"""
from dvt_ms import create_model
from dvt_ms.infer import AdaptiveClassifier, default_buckets
from dvt_ms.kernels import KernelChoice
from dvt_ms.layers.token_reorganization import kept_token_count
from dvt_ms.train.schedule import keep_rate_at_step, quantize_keep_rate
from dvt_ms.utils.gears import MAX_GEARS, bucket_gears, keep_count_gears, uses_gears

TINY = dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=5, image_size=64)


def _schedule_graphs(gears=None, token_step=1, steps_per_epoch=20, tokens=196, target=0.7):
    """Distinct keep rates (= training graphs) over EViT's DeiT-S schedule: start epoch 10, 100 shrink epochs."""
    rates = {quantize_keep_rate(keep_rate_at_step(step, steps_per_epoch, target, 10, 110), tokens, token_step, gears)
             for step in range(0, 120 * steps_per_epoch)}
    return rates


def test_evit_schedule_compiles_at_most_the_gears_on_accelerators():
    tokens, target = 196, 0.7
    gears = keep_count_gears(kept_token_count(target, tokens), tokens)
    assert len(gears) <= MAX_GEARS and gears[0] == 138 and gears[-1] == tokens
    assert len(_schedule_graphs()) == 59  # CPU default: one graph per first-block token count
    rates = _schedule_graphs(gears)
    assert len(rates) <= MAX_GEARS
    # the schedule still ends on the target's token count and never keeps fewer tokens than asked
    assert kept_token_count(min(rates), tokens) == kept_token_count(target, tokens)
    for step in range(0, 120 * 20, 97):
        rate = keep_rate_at_step(step, 20, target, 10, 110)
        assert kept_token_count(quantize_keep_rate(rate, tokens, 1, gears), tokens) >= kept_token_count(rate, tokens)


def test_engine_buckets_are_gears_on_accelerators():
    assert uses_gears("GPU") and uses_gears("Ascend") and not uses_gears("CPU")
    assert bucket_gears(64) == (1, 2, 4, 8, 16, 32, 64) and len(default_buckets()) > MAX_GEARS
    assert bucket_gears(48) == (1, 2, 4, 8, 16, 32, 48)
    for device, expected in (("GPU", bucket_gears(64)), ("CPU", default_buckets())):
        net = create_model("dvt_deit_small", cpu_kernels=KernelChoice.resolve("off", device), **TINY)
        assert AdaptiveClassifier(net, [0.5, 0.5, -1e8]).buckets == expected

