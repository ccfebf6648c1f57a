"""The SNR-sweep study, side by side: its configuration (``config``), the stage runner (``runner``), the
CKA analysis (``analysis``), the diffusion-map analysis (``diffusion``) and the enhancement-quality stage
(``quality``). ``from jaxprobe.studies.sweep import run`` stays the entry point (the CLI calls it)."""
from jaxprobe.studies.sweep.runner import load_sweep_arrays, run

__all__ = ["load_sweep_arrays", "run"]
