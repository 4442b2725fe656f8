"""The benchmark suites behind ``dvt-ms benchmark`` (:mod:`dvt_ms.commands.benchmark`).

* :mod:`.inference`: images/s of the MindSpore models against the torch DeiT-S and official DVT cascade;
* :mod:`.early_exit`: the early-exit engine against the full cascade, DeiT-S and EViT-S;
* :mod:`.train`: training steps against an eager torch step;

built on :mod:`.timing` (interleaved rounds, thread accounting), :mod:`.environment` (report header, CPU
flags, GEMM peaks), :mod:`.ratios` (the :data:`~dvt_ms.benchmarks.ratios.TARGETS` table),
:mod:`.mindspore_rows` and :mod:`.torch_baselines`. Nothing here is imported by ``import dvt_ms``, and
torch only when a torch row is asked for.
"""
