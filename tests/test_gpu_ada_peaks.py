"""The Ada presets' tensor peaks: the vendor figures they cite, and a source comment on every number."""

import re
from pathlib import Path

import pytest

from tokenstack_sim.config import load_config

pytestmark = pytest.mark.unit

GPU_DIR = Path(__file__).resolve().parents[1] / "arch_configs" / "gpu"


def test_rtx_4090_peaks_are_the_whitepapers_fp32_accumulate_dense_figures():
    # NVIDIA Ada GPU Architecture whitepaper (v2.02 and later), Appendix A, GeForce RTX 4090, dense/sparse:
    # FP16 and BF16 with FP32 accumulate 165.2/330.4, FP8 with FP32 accumulate 330.3/660.6.
    g = load_config("rtx-4090")
    assert g.peak_flops("bf16") == pytest.approx(165.2e12)
    assert g.peak_flops("fp16") == pytest.approx(165.2e12)
    assert g.peak_flops("fp8") == pytest.approx(330.3e12)
    # per clock: 128 SMs x 4 tensor cores x 2520 MHz boost x 256 FP8 FLOP/clk (FP32 accumulate, GeForce)
    assert 128 * 4 * 2.52e9 * 256 == pytest.approx(g.peak_flops("fp8"), rel=1e-3)


def test_rtx_6000_ada_fp8_is_half_the_datasheets_sparse_tensor_figure():
    g = load_config("rtx-6000-ada")
    assert g.peak_flops("fp8") == pytest.approx(1457.0e12 / 2)  # datasheet: 1,457 TFLOPS FP8 with sparsity
    assert 568 * 2.505e9 * 512 == pytest.approx(g.peak_flops("fp8"), rel=1e-3)  # 568 TCs at 2505 MHz
    assert g.peak_flops("bf16") == pytest.approx(g.peak_flops("fp8") / 2, rel=1e-3)


@pytest.mark.parametrize("name", ["rtx-4090", "rtx-6000-ada"])
def test_every_number_cites_its_source_in_a_comment(name):
    for lineno, line in enumerate((GPU_DIR / f"{name}.toml").read_text().splitlines(), start=1):
        code = line.split("#", 1)[0]
        if re.match(r"\s*[A-Za-z_][\w]*\s*=\s*[-+0-9.]", code) and not code.strip().startswith("schema_version"):
            assert "#" in line and line.split("#", 1)[1].strip(), f"{name}.toml line {lineno} has no source: {line}"
