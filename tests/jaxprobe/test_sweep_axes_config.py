"""The [sweep] axis keys: levels of each axis, their ranges, and what goes with them."""
import pytest

from jaxprobe.studies.sweep.config import ConfigError, level_grid, load_sweep_config


def test_level_grid_per_axis():
    assert level_grid(load_sweep_config({"sweep": {"snrs": [0, 10, 20]}})) == [0.0, 10.0, 20.0]
    cfg = load_sweep_config({"sweep": {"axis": "c50", "values": [3, 10, 25]}})
    assert level_grid(cfg) == [3.0, 10.0, 25.0]
    assert cfg["diffusion"]["inter_snrs"] == [3, 10, 25]  # spread over the grid, not the paper's SNRs
    assert level_grid(load_sweep_config({"sweep": {"axis": "clipping", "values": [1.0, 0.2]},
                                         "diffusion": {"inter_snrs": [1.0]}})) == [1.0, 0.2]
    assert load_sweep_config("reverb-demo")["sweep"]["axis"] == "c50"
    clip = load_sweep_config("clipping-demo")
    assert clip["sweep"]["axis"] == "clipping" and level_grid(clip) == [0.5, 0.2, 0.1, 0.05]
    assert clip["quality"]["enabled"] is True


@pytest.mark.parametrize("sweep,match", [
    ({"axis": "reverb", "values": [5]}, "sweep.axis"),
    ({"axis": "c50"}, "sweep.values"),
    ({"axis": "c50", "values": [1, 10]}, r"\[1\] out of range"),
    ({"axis": "c50", "values": [10, 45]}, "out of range"),
    ({"axis": "clipping", "values": [0.0, 0.5]}, r"\(0, 1\]"),
    ({"axis": "clipping", "values": [1.5]}, r"\(0, 1\]"),
    ({"axis": "clipping", "values": [0.5, 0.5]}, "must not repeat"),
    ({"values": [0, 10]}, "empty on the snr axis"),
    ({"axis": "c50", "values": [5, 10], "reference": "wet"}, "sweep.reference"),
    ({"axis": "c50", "values": [5, "x"]}, "list of numbers"),
])
def test_bad_axis_settings(sweep, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep_config({"sweep": sweep})


def test_quality_needs_per_item_cka():
    with pytest.raises(ConfigError, match="cka.protocols"):
        load_sweep_config({"quality": {"enabled": True}, "cka": {"protocols": ["centroid"]}})
    assert load_sweep_config({"quality": {"enabled": True}})["quality"]["enabled"] is True
    # any enhancement model (whether the model has enhance() is checked once it is loaded:
    # tests/jaxprobe/test_sweep_models.py)
    assert load_sweep_config({"quality": {"enabled": True}, "model": {"name": "gtcrn"}})["quality"]["enabled"] is True
