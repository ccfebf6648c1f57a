"""The hear report's view of results.json: model names, the conditions, models, regimes and layers it
holds, one record's field, and the human speakers' records in the synthetic voices' place."""
from __future__ import annotations

MODEL_NAMES = {"vgg_lstm": "VGG-LSTM", "lstm": "pure-LSTM"}


class HearResultsError(KeyError):
    """results.json of a hear study lacks something the report needs."""


def need(results, key):
    if key not in results:
        raise HearResultsError(f"The hear results lack '{key}'; re-run `jaxprobe hear` to regenerate results.json.")
    return results[key]


def conditions(results) -> list[str]:
    return list(results["data"]["conditions"])


def cond_label(c: str) -> str:
    return "clean" if c == "clean" else f"{c} dB"


def models(results) -> list[str]:
    seen = []
    for r in need(results, "probe"):
        if r["model"] not in seen:
            seen.append(r["model"])
    return seen


def regimes(results) -> list[str]:
    seen = []
    for r in results["probe"]:
        if r["regime"] not in seen:
            seen.append(r["regime"])
    return seen


def layers(results, model) -> list[str]:
    return [e["label"] for e in results["layers"][model]]


def cell(results, model, regime, layer, cond, field="eer"):
    for r in results["probe"]:
        if (r["model"], r["regime"], r["layer"], r["condition"]) == (model, regime, layer, cond):
            return r.get(field)
    return None


def ref(results, model, regime, layer, cond, field):
    for r in results.get("reference", []):
        if (r["model"], r["regime"], r["layer"], r["condition"]) == (model, regime, layer, cond):
            return r.get(field)
    return None


def human_view(results) -> dict | None:
    """``results`` with the human speakers' records in place of the synthetic voices' (``probe_human``
    as ``probe``, ...), so every table and figure function draws them; None when there are none."""
    if not results.get("probe_human"):
        return None
    return {**results, "probe": results["probe_human"], "reference": results.get("reference_human", []),
            "contrasts": results.get("contrasts_human", [])}


def is_hear_results(results) -> bool:
    return isinstance(results, dict) and "asr" in results and "probe" in results

