"""benchmarks/noise_robustness.py: each noise has the documented kind and level (pixel units), reproducibly."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "noise_robustness.py"


def _load():
    spec = importlib.util.spec_from_file_location("noise_robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MEAN = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
STD = torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1)


@pytest.mark.parametrize("noise", ["gaussian", "speckle", "uniform", "salt_pepper", "none"])
def test_noise_has_its_level_in_pixel_units(noise):
    nb = _load()
    pixels = (torch.rand(64, 3, 16, 16) - MEAN) / STD  # normalized images of [0, 1] pixels
    level = nb.NOISES[noise]
    out = nb.add_noise(pixels, noise, level, MEAN, STD, torch.Generator().manual_seed(0))
    again = nb.add_noise(pixels, noise, level, MEAN, STD, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    x, y = pixels * STD + MEAN, out * STD + MEAN
    diff = y - x
    if noise == "none":
        assert torch.equal(out, pixels)
    elif noise == "gaussian":
        assert float(diff.std()) == pytest.approx(level, rel=0.05) and abs(float(diff.mean())) < 0.01
    elif noise == "uniform":
        assert float(diff.abs().max()) <= level + 1e-5 and float(diff.std()) == pytest.approx(level / 3**0.5, rel=0.05)
    elif noise == "speckle":
        assert float((diff / x.clamp_min(1e-3))[x > 0.1].std()) == pytest.approx(level, rel=0.05)
    else:
        hit = (diff.abs() > 1e-6).any(dim=1)  # whole pixel positions
        assert float(hit.float().mean()) == pytest.approx(level, abs=0.01)
        values = y.permute(0, 2, 3, 1)[hit]
        assert torch.all((values.abs() < 1e-5) | ((values - 1).abs() < 1e-5))
    with pytest.raises(SystemExit, match="unknown noise"):
        nb.add_noise(pixels, "poisson", 0.1, MEAN, STD, torch.Generator())


@pytest.mark.parametrize(("flag", "value", "message"), [("--data", "both", "--data names"),
                                                         ("--noises", "pink", "unknown noise"),
                                                         ("--methods", "qat", "unknown method")])
def test_bad_arguments_stop_with_one_line_before_any_work(flag, value, message):
    with pytest.raises(SystemExit, match=message):
        _load().main([flag, value])
