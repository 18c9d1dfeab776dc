"""The "both CPU kinds" table: rows of two saved real-model runs side by side, each cell against
the fp32 row of its own run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchlib.render_real_cpus import cpus_section, kind


def _run(flags: list[str], fp32_ms: float, int8_ms: float, agreed: int) -> dict[str, Any]:
    def row(ms: float, **fidelity: Any) -> dict[str, Any]:
        return {"latency_ms": {"p50": ms}, **fidelity}

    return {
        "environment": {"cpu_flags": flags},
        "run": {"date": "2026-12-01"},
        "minilm": {
            "measured": {
                "rows": {
                    "fp32": row(fp32_ms, cosine_mean=1.0, cosine_min=1.0),
                    "int8": row(int8_ms, cosine_mean=0.99, cosine_min=0.95),
                }
            }
        },
        "llm": {
            "measured": {
                "rows": {
                    "fp32": row(fp32_ms, agreed=48, prompts=48),
                    "int8": row(int8_ms, agreed=agreed, prompts=48),
                }
            }
        },
    }


def test_each_kind_is_a_column_and_each_cell_compares_within_its_run() -> None:
    avx2 = _run(["avx2", "fma"], 200.0, 100.0, 30)
    vnni = _run(["avx2", "avx512f", "avx512_vnni"], 100.0, 40.0, 26)

    text = "\n".join(cpus_section(avx2, [(Path("real-avx512-vnni.json"), vnni)]))

    assert (kind(avx2), kind(vnni)) == ("AVX2, no VNNI", "AVX-512 VNNI")
    assert "| AVX2, no VNNI (`docs/bench/real.json`, 2026-12-01) |" in text
    assert "AVX-512 VNNI (`docs/bench/real-avx512-vnni.json`, 2026-12-01) |" in text
    assert "| all-MiniLM-L6-v2 | int8 | 0.50x, cosine 0.9900 / 0.9500 | 0.40x, cosine" in text
    assert "| SmolLM2-135M | int8 | 0.50x, 30/48 next tokens | 0.40x, 26/48 next tokens |" in text
    assert "PP-OCRv4" not in text  # neither run measured it


def test_a_row_only_one_run_has_shows_a_dash_in_the_other() -> None:
    avx2 = _run(["avx2"], 200.0, 100.0, 30)
    vnni = _run(["avx512_vnni"], 100.0, 40.0, 26)
    vnni["minilm"]["measured"]["rows"]["fp16"] = {"latency_ms": {"p50": 90.0}}

    text = "\n".join(cpus_section(avx2, [(Path("real-avx512-vnni.json"), vnni)]))

    assert "| all-MiniLM-L6-v2 | fp16 | - | 0.90x, cosine n/a / n/a |" in text


def test_a_run_s_notes_are_listed_under_the_table() -> None:
    avx2 = _run(["avx2"], 200.0, 100.0, 30)
    vnni = _run(["avx512_vnni"], 100.0, 40.0, 26)
    avx2["run"]["notes"] = ["measured before a change."]

    text = cpus_section(vnni, [(Path("real-avx2.json"), avx2)])

    assert text[-1] == "- `docs/bench/real-avx2.json`: measured before a change."
    assert not any("notes" in line for line in cpus_section(vnni, []))
