"""Speed measurement: what the method costs and what pruning buys, measured side by side (`measure`), reported
against goals (`report`), for profiling, pruned inference, healing and evaluation. `bench/` runs them."""

from .._lazy import lazy_attributes

_NAMES = {
    "synchronize": "measure",
    "Stopwatch": "measure",
    "use_threads": "measure",
    "timed": "measure",
    "rounds": "measure",
    "paired_ratio": "measure",
    "PeakMemory": "measure",
    "reset_peak": "measure",
    "current_mib": "measure",
    "peak_mib": "measure",
    "weights_in_memory": "measure",
    "in_subprocess": "measure",
    "Check": "report",
    "Report": "report",
    "cacheable": "report",
    "PROFILE_VARIANTS": "profiling",
    "corpus_tokens": "profiling",
    "num_layers": "profiling",
    "plain_forward": "profiling",
    "hidden_state_distances": "profiling",
    "run_variant": "profiling",
    "spread": "profiling",
    "profiling_speed": "profiling",
    "variant_memory": "profiling",
    "profiling_memory_of": "profiling",
    "memory_report": "profiling",
    "profiling_memory": "profiling",
    "LayerClock": "inference",
    "ideal_speedup": "inference",
    "efficiency": "inference",
    "prefill": "inference",
    "decode": "inference",
    "generation_seconds": "inference",
    "layer_shares": "inference",
    "pruned_models": "inference",
    "inference_speed": "inference",
    "healing_run": "throughput",
    "healing_speed": "throughput",
    "evaluation_speed": "throughput",
    "speedup_figure": "figures",
}
_MODULES = ("figures", "inference", "measure", "profiling", "report", "throughput")
__getattr__ = lazy_attributes(__name__, _MODULES, _NAMES)
__all__ = sorted(_NAMES)
