"""The reproducibility probe (``seedlock probe``): the runner, the presets and
their renderings (text, rich, JSON, self-contained HTML).

Not imported by ``import langchain_seedlock``: ``run_probe`` and
``ProbeResult`` there are lazy names that import this package on first use.
"""

from langchain_seedlock.probe._presets import (
    PRESETS,
    Group,
    PresetResult,
    run_batch_invariance,
    run_cookbook,
    run_seed_honored,
)
from langchain_seedlock.probe._runner import ArmStats, ProbeResult, ProbeRun, run_probe

__all__ = [
    "PRESETS",
    "ArmStats",
    "Group",
    "PresetResult",
    "ProbeResult",
    "ProbeRun",
    "run_batch_invariance",
    "run_cookbook",
    "run_probe",
    "run_seed_honored",
]
