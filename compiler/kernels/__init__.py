"""lwc's own kernels: TIR kernels, tensor intrinsics and the MetaSchedule schedule rules
that belong to them. The passes in ``passes/`` only rewrite graphs; where a rewrite calls
one of lwc's kernels, it builds it with a module of this package.

| module | what |
|---|---|
| ``elementwise`` | NaN-preserving HardSwish / HardSigmoid kernels (FuseHardSwish, FuseHardSigmoid) |
| ``bsr`` | block compressed sparse row weights and the BSR matmul / 1x1 conv kernels |
| ``dot_intrin`` | lwc's x86 int8 tensor intrinsics (VNNI with byte operands, AVX2 ``vpmaddwd``) |
| ``int8_conv2d`` | the ISA table (``dot_product_for``), the packed int8 conv kernels and their rules |
| ``int8_depthwise`` | the int8 depthwise conv kernels (widening; VNNI row windows and row quads) and their fixed schedule rules |

Importing ``int8_conv2d`` or ``int8_depthwise`` registers their schedule rules with TVM
(``s_tir.meta_schedule.cpu.<rule>``, named by the kernels' ``schedule_rule`` block
annotations); this package's ``__init__`` imports nothing.
"""
