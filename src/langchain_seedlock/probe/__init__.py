"""The reproducibility probe (``seedlock probe``): the runner, the presets and
their renderings (text, rich, JSON, self-contained HTML).

Not imported by ``import langchain_seedlock``: ``run_probe`` and
``ProbeResult`` there are lazy names that import this package on first use.
"""

from langchain_seedlock.probe._runner import ArmStats, ProbeResult, ProbeRun, run_probe

__all__ = ["ArmStats", "ProbeResult", "ProbeRun", "run_probe"]
