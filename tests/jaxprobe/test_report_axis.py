"""The report on a non-SNR axis: levels read where the SNR code reads them, prose and labels
follow the axis, results.json's records stay as written."""
from jaxprobe.report.axis import axis_label, relabel, set_axis, snr_view


def test_snr_view_and_relabel():
    res = {"data": {"axis": "c50", "levels": [3.0, 10.0]}, "cka": [{"layer": "a", "axis": "c50", "level": 3.0}]}
    view = snr_view(res)
    assert view["cka"][0]["snr"] == 3.0 and view["data"]["snrs"] == [3.0, 10.0]
    assert "snr" not in res["cka"][0] and "snrs" not in res["data"]  # the input is not changed
    snr = {"data": {"axis": "snr", "snrs": [0.0]}, "cka": [{"snr": 0.0, "level": 0.0}]}
    assert snr_view(snr) is snr
    text = "Probing MUSE across input SNRs: CKA vs SNR; Input SNR (dB); snr_min = -10; SNRISH"
    assert relabel(text, "c50") == "Probing MUSE across C50 levels: CKA vs C50; C50 (dB); snr_min = -10; SNRISH"
    assert relabel(text, "snr") == text
    assert "clipping level" in relabel("CKA vs SNR", "clipping")
    set_axis("clipping")
    try:
        assert axis_label() == "Clipping threshold (× peak)"
    finally:
        set_axis("snr")
    assert axis_label() == "Input SNR (dB)"
