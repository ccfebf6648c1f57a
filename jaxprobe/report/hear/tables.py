"""The hear report's tables (recognisers, Table 2, per-metric tables with intervals, contrasts,
references, data, settings) and its CSV files."""
from __future__ import annotations

from pathlib import Path

from jaxprobe.report.hear import _records as R
from jaxprobe.report.tables import write_csv


def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def asr_rows(results):
    conds = R.conditions(results)
    head = ["model", "regime", "steps", "train s", "params", "held-out CER %", "WER %"] + \
           [f"CER % ({R.cond_label(c)})" for c in conds]
    rows = []
    for r in R.need(results, "asr"):
        rows.append([R.MODEL_NAMES.get(r["model"], r["model"]), r["regime"], r.get("steps") or "–",
                     _f(r.get("train_seconds"), 0), r.get("n_params") or "–", _f(100 * r["cer"], 1), _f(100 * r["wer"], 1)]
                    + [_f(100 * r["listen"][c]["cer"], 1) if c in r.get("listen", {}) else "–" for c in conds])
    return head, rows


def table2_rows(results):
    """The paper's Table 2: rows (condition, regime), columns model x layer, EER %."""
    models = R.models(results)
    head = ["input", "recogniser"] + [f"{R.MODEL_NAMES.get(m, m)} {lay}" for m in models for lay in ["mel"] + R.layers(results, m)]
    rows = []
    for cond in R.conditions(results):
        for regime in R.regimes(results):
            row = [R.cond_label(cond), regime]
            for m in models:
                row.append(_f(R.ref(results, m, regime, "mel", cond, "eer"), 1))
                row += [_f(R.cell(results, m, regime, lay, cond), 1) for lay in R.layers(results, m)]
            rows.append(row)
    return head, rows


def metric_rows(results, field, digits=3):
    models = R.models(results)
    head = ["model", "recogniser", "layer"] + [R.cond_label(c) for c in R.conditions(results)]
    rows = []
    for m in models:
        for regime in R.regimes(results):
            for lay in R.layers(results, m):
                row = [R.MODEL_NAMES.get(m, m), regime, lay]
                for c in R.conditions(results):
                    e = R.cell(results, m, regime, lay, c, field)
                    lo, hi = R.cell(results, m, regime, lay, c, f"{field}_low"), R.cell(results, m, regime, lay, c, f"{field}_high")
                    if e is None:
                        row.append("–")
                    elif lo is None or hi is None:  # no interval (e.g. an EER from too few trials)
                        row.append(f"{e:.{digits}f}")
                    else:
                        row.append(f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
                rows.append(row)
    return head, rows


def contrast_rows(results, statistic="stoi_robust_minus_baseline", digits=3):
    cons = [c for c in results.get("contrasts", []) if c.get("statistic", statistic) == statistic]
    conds = [c for c in R.conditions(results)]
    head = ["model", "layer"] + [R.cond_label(c) for c in conds]
    rows, seen = [], []
    for c in cons:
        if (c["model"], c["layer"]) not in seen:
            seen.append((c["model"], c["layer"]))
    for m, lay in seen:
        row = [R.MODEL_NAMES.get(m, m), lay]
        for cond in conds:
            got = [c for c in cons if (c["model"], c["layer"], c["condition"]) == (m, lay, cond)]
            if not got or got[0]["estimate"] is None:
                row.append("–")
            elif got[0]["low"] is None:
                row.append(f"{got[0]['estimate']:+.{digits}f}")
            else:
                row.append(f"{got[0]['estimate']:+.{digits}f} [{got[0]['low']:+.{digits}f}, {got[0]['high']:+.{digits}f}]")
        rows.append(row)
    return head, rows


def reference_rows(results):
    head = ["model", "recogniser", "reference", "condition", "EER %", "STOI", "PESQ"]
    rows = []
    for r in results.get("reference", []):
        rows.append([R.MODEL_NAMES.get(r["model"], r["model"]), r["regime"],
                     "input waveform" if r["layer"] == "audio" else "Griffin-Lim of input mel",
                     R.cond_label(r["condition"]), _f(r["eer"], 1), _f(r["stoi"], 3),
                     _f(r.get("pesq"), 2)])
    return head, rows


def settings_rows(results):
    s = results["settings"]
    out = []
    for sec in ("data", "conditions", "asr", "speaker", "probe", "listen"):
        for k, v in s.get(sec, {}).items():
            out.append([f"{sec}.{k}", str(v)])
    out.append(["seed", str(s.get("seed"))])
    return ["setting", "value"], out


def data_rows(results):
    d = results["data"]
    rows = [["corpus", d["corpus"]], ["recogniser / speaker-model training utterances", str(d["n_train"])],
            ["ASR held-out utterances", str(d["n_held_out"])],
            ["probe training / validation utterances", f"{d['n_probe_train']} / {d['n_probe_valid']}"],
            ["listening set", f"{d['n_listen']} utterances of {len(d['listen_speakers'])} speakers "
                              f"({', '.join(d['listen_speakers'])})"],
            ["listening noises", ", ".join(d["listen_noises"])], ["conditions", ", ".join(map(R.cond_label, d["conditions"]))],
            ["window", f"{d['window_seconds']} s centred per utterance"]]
    sp = results.get("speaker", {})
    pc = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    if d.get("n_listen_human"):
        rows.insert(5, ["listening set, human speakers (reported apart)",
                        f"{d['n_listen_human']} held-out studio prompts of {len(d['listen_human_speakers'])} speakers "
                        f"({', '.join(d['listen_human_speakers'])})"])
    if "judge" in sp:
        j, x = sp["judge"], sp.get("xvector", {})
        rows.append(["speaker judge", f"{j['name']} — {j['source']}; trained on {j['training_data']}; {j['licence']}"])
        rows.append(["judge EER, held-out human speech (clean)",
                     f"{pc(j.get('eer_human'))} [{pc(j.get('eer_human_low'))}, {pc(j.get('eer_human_high'))}] "
                     f"({j.get('n_human_utterances') or 0} utterances of {len(j.get('human_speakers') or [])} speakers)"])
        rows.append(["judge EER, clean listening windows (synthetic voices)",
                     f"{pc(j.get('eer_synthetic'))} [{pc(j.get('eer_synthetic_low'))}, {pc(j.get('eer_synthetic_high'))}]"])
        rows.append(["second judge", f"x-vector, {x.get('steps', '?')} steps on {len(x.get('speakers', []))} synthetic "
                                     f"training voices; EER human {pc(x.get('eer_human'))}, synthetic {pc(x.get('eer_synthetic'))}"])
    elif sp:  # results written before the pretrained judge
        rows.append(["speaker model", f"x-vector, {sp.get('steps', '?')} steps on {len(sp.get('speakers', []))} training speakers"])
    return ["", ""], rows


def write_hear_csvs(results, out) -> dict[str, Path]:
    out = Path(out)
    probe_cols = ["model", "regime", "layer", "layer_index", "r", "condition", "snr", "l1", "l1_low", "l1_high",
                  "stoi", "stoi_low", "stoi_high", "pesq", "pesq_low", "pesq_high", "pesq_excluded", "eer", "eer_low",
                  "eer_high", "min_dcf_0.01", "min_dcf_0.01_low", "min_dcf_0.01_high", "min_dcf_0.001",
                  "min_dcf_0.001_low", "min_dcf_0.001_high", "eer_xvector", "n_items"]
    asr = [{k: v for k, v in r.items() if k != "listen"} | {f"cer_{c}": v["cer"] for c, v in r.get("listen", {}).items()}
           | {f"wer_{c}": v["wer"] for c, v in r.get("listen", {}).items()} for r in results["asr"]]
    h, rows = table2_rows(results)
    t2 = [dict(zip(h, row)) for row in rows]
    human = {}
    hv = R.human_view(results)
    if hv is not None:  # the human speakers, apart
        h2, rows2 = table2_rows(hv)
        human = {"probe_human": write_csv(out / "probe_human.csv", probe_cols, hv["probe"]),
                 "table2_human": write_csv(out / "table2_human.csv", h2, [dict(zip(h2, row)) for row in rows2]),
                 "contrasts_human": write_csv(out / "contrasts_human.csv",
                                               ["model", "layer", "condition", "statistic", "estimate", "low", "high"],
                                               hv["contrasts"])}
    return {**human, "probe": write_csv(out / "probe.csv", probe_cols, results["probe"]),
            "reference": write_csv(out / "reference.csv", ["model", "regime", "layer", "condition", "eer", "eer_low",
                                                            "eer_high", "stoi", "pesq"],
                                    results.get("reference", [])),
            "asr": write_csv(out / "asr.csv", ["model", "regime", "cer", "wer"], asr),
            "table2": write_csv(out / "table2.csv", h, t2),
            "contrasts": write_csv(out / "contrasts.csv", ["model", "layer", "condition", "statistic", "estimate", "low", "high"],
                                    results.get("contrasts", []))}


