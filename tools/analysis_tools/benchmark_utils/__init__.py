"""The parts of ``tools/analysis_tools/benchmark.py`` and
``gpu_benchmark.py`` (the command lines stay there): model and inputs
(:mod:`.model`), probes (:mod:`.measure`), measurements (:mod:`.modes`,
:mod:`.expressions`, :mod:`.gpu_runs`) and tables (:mod:`.report`,
:mod:`.gpu_report`)."""
from .measure import (STAGES, PeakMemory, StageProbe, amp_context,
                      flop_counter, summarize, synchronize)
from .model import TEXTS, build_model, input_size, load_config, make_samples
from .modes import (benchmark_inference, benchmark_stock,
                    benchmark_train_steps, build_optim_wrapper,
                    merged_sam_state_dict)
from .report import (env_line, fmt_bytes, fmt_g, print_inference, print_stock,
                     print_train)

__all__ = [
    'STAGES', 'TEXTS', 'PeakMemory', 'StageProbe', 'amp_context',
    'flop_counter', 'summarize', 'synchronize', 'build_model', 'input_size',
    'load_config', 'make_samples', 'benchmark_inference', 'benchmark_stock',
    'benchmark_train_steps', 'build_optim_wrapper', 'merged_sam_state_dict',
    'env_line', 'fmt_bytes', 'fmt_g', 'print_inference', 'print_stock',
    'print_train'
]
