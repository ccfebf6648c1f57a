"""Frame-wise Highway reconstruction probes (the "what does a layer hear" probe), trained for all
layers of a model in one jitted step."""
from jaxprobe.probe.highway import Highway, HighwayBody, HighwayProbe, Upsample, apply_probe, init_probe
from jaxprobe.probe.data import ProbeConfig, ProbeData, TrainConfig, probe_frames
from jaxprobe.probe.step import ProbeResult, default_optimizer, layer_key, predict
from jaxprobe.probe.train import evaluate_probes, train_probes

__all__ = [
    "Highway",
    "HighwayBody",
    "HighwayProbe",
    "ProbeConfig",
    "ProbeData",
    "ProbeResult",
    "TrainConfig",
    "Upsample",
    "apply_probe",
    "default_optimizer",
    "evaluate_probes",
    "init_probe",
    "layer_key",
    "predict",
    "probe_frames",
    "train_probes",
]
