"""Calibration: the test-time temperature and K chosen on held-out data, written to the run, used by sample."""

import numpy as np
import pytest
import torch
from torch import nn

from hatrefine.adapters import wrap
from hatrefine.evaluation.calibration import calibrate, choose
from hatrefine.models.refiner import HatRefiner
from hatrefine.settings.config import FitConfig

SIGMA = 0.3  # the data: N(0, SIGMA^2) in every pixel


class Flat(nn.Module):
    """Feature network of the toy: the pixels themselves."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x.flatten(1)


class Quadratic(nn.Module):
    """H(x) = ||x||^2 / (4 SIGMA^2): at temperature T the model is N(0, 2 SIGMA^2 T), the data's at T = 1/2."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.flatten(1).square().sum(1) / (4 * SIGMA**2) + 0 * self.dummy


def test_calibration_picks_the_temperature_that_matches_the_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "data.npz", x=(SIGMA * torch.randn(5000, 1, 2, 2, generator=g)).numpy())
    G = wrap(lambda z: 0.2 * z.view(-1, 1, 2, 2), latent_shape=(4,), image_shape=(1, 2, 2), name="toy")
    config = FitConfig(data=str(tmp_path / "data.npz"), mode="conditional", temperature=1.0, eps_y=0.1, y_clip=None, langevin_steps=100, device="cpu")
    refiner = HatRefiner(G, Quadratic(), config)
    record = calibrate(refiner, config.data, n=1000, net=Flat(), temperature_factors=(1.0, 0.5, 0.25))
    assert record["chosen"]["temperature"] == 0.5
    assert record["keeps_recall"] and record["n_reference"] == 500  # every tenth of the 5,000 is held out
    fd = {(r["temperature"], r["langevin_steps"]): r["fd"] for r in record["grid"]}
    assert fd[(0.5, 100)] < fd[(1.0, 100)] and fd[(0.5, 100)] < fd[(0.25, 100)]


def test_the_criterion_does_not_buy_a_lower_distance_with_recall():
    generator = {"fd": 10.0, "recall": 0.8, "coverage": 0.7}
    sharp = {"fd": 5.0, "recall": 0.5, "coverage": 0.7}  # lower distance, lost recall
    kept = {"fd": 7.0, "recall": 0.79, "coverage": 0.75}
    assert choose([sharp, kept], generator) == (kept, True)
    worse = {"fd": 9.0, "recall": 0.6, "coverage": 0.6}
    assert choose([sharp, worse], generator) == (worse, False)  # none keeps both: the smallest shortfall (0.1 vs 0.3)


def test_a_fit_writes_its_calibration_to_the_run_and_sample_uses_it(tmp_path, tiny_generator, monkeypatch):
    import hatrefine.evaluation.calibration as calibration
    from hatrefine.files.jsonfiles import read_json
    from hatrefine.training.trainer import Trainer

    monkeypatch.setattr(calibration, "quick_metric_net", lambda shape, device, inception_on_cpu=True, metric="quick": (Flat(), "pixels"))
    rng = np.random.default_rng(0)
    x = np.full((400, 1, 8, 8), -1.0, dtype=np.float32)
    x[:, :, 2:6, 2:6] = rng.uniform(0.5, 1.0, size=(400, 1, 1, 1))
    np.savez(tmp_path / "blobs.npz", x=x)
    config = FitConfig(data=str(tmp_path / "blobs.npz"), hat="small", hat_width=4, steps=3, batch_size=8, langevin_steps=4, eps_y=1e-2, eps_z=5e-2,
                       temperature=1e-2, lr=1e-3, eval_samples=0, calibration_samples=20, device="cpu")  # fmt: skip
    Trainer(config, tmp_path / "run", generator=tiny_generator).run(progress=False)
    record = read_json(tmp_path / "run" / "quality.json")["calibration"]
    assert len(record["grid"]) == 4 * 3 and record["metric"] == "pixels" and record["n_reference"] == 40
    sampling = read_json(tmp_path / "run" / "sampling.json")
    assert sampling["chosen_by"] == "calibration"
    assert (sampling["temperature"], sampling["langevin_steps"]) == (record["chosen"]["temperature"], record["chosen"]["langevin_steps"])
    sampler = HatRefiner.from_pretrained(tmp_path / "run", generator=tiny_generator).sampler()
    assert sampler.n_steps == record["chosen"]["langevin_steps"]
    assert sampler.energy.temperature == record["chosen"]["temperature"]


def test_no_calibrate_samples_at_the_configs_test_settings(tmp_path, tiny_generator, monkeypatch):
    import hatrefine.evaluation.calibration as calibration
    from hatrefine.files.jsonfiles import read_json
    from hatrefine.training.trainer import Trainer

    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: pytest.fail("--no-calibrate must not calibrate"))
    x = np.random.default_rng(0).uniform(-1, 1, size=(40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    config = FitConfig(data=str(tmp_path / "data.npz"), hat="small", hat_width=4, steps=2, batch_size=8, langevin_steps=4, langevin_steps_test=3,
                       temperature=1e-2, temperature_test=3e-3, eval_samples=0, calibrate=False, device="cpu")  # fmt: skip
    Trainer(config, tmp_path / "run", generator=tiny_generator).run(progress=False)
    sampling = read_json(tmp_path / "run" / "sampling.json")
    assert sampling["chosen_by"] == "config" and (sampling["temperature"], sampling["langevin_steps"]) == (3e-3, 3)
    quality = tmp_path / "run" / "quality.json"
    assert not quality.exists() or "calibration" not in read_json(quality)
    sampler = HatRefiner.from_pretrained(tmp_path / "run", generator=tiny_generator).sampler()
    assert (sampler.n_steps, sampler.energy.temperature) == (3, 3e-3)


def test_continued_chains_end_where_chains_of_each_length_end(tiny_generator):
    from hatrefine.evaluation.calibration import chain_ends
    from hatrefine.sampling.energy import HatEnergy
    from hatrefine.sampling.langevin import LangevinSampler
    from hatrefine.settings.config import Schedule

    hat = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    z0 = tiny_generator.sample_latent(6, generator=torch.Generator().manual_seed(0))
    for schedule in (Schedule(), Schedule("linear", 0.2)):
        sampler = LangevinSampler(HatEnergy(hat, tiny_generator, 0.1), 5, eps_y=0.05, eps_z=0.1, step_schedule=schedule)
        ends, seconds = chain_ends(sampler, z0, [2, 5], seed=3, batch_size=4)
        assert seconds[2] > 0 and (schedule.kind != "constant" or seconds[5] >= seconds[2])  # continued: cumulative
        for K in (2, 5):
            alone = LangevinSampler(HatEnergy(hat, tiny_generator, 0.1), K, eps_y=0.05, eps_z=0.1, step_schedule=schedule)
            x = torch.cat([alone.sample(z0[s : s + 4], generator=torch.Generator().manual_seed(3 + s)).x for s in (0, 4)])
            torch.testing.assert_close(ends[K], x)


def test_a_bad_sampling_file_is_one_line_naming_the_file_and_field(tmp_path):
    import pytest

    from hatrefine import HatrefineError
    from hatrefine.settings.config import SamplingSettings

    good = SamplingSettings.from_config(FitConfig()).to_dict()
    assert SamplingSettings.from_dict(good).eps_z == 5e-3
    for bad, words in (
        ({**good, "temperature": "cold"}, "field 'temperature' is 'cold'"),
        ({k: v for k, v in good.items() if k != "eps_y"}, "field 'eps_y' is missing"),
        ({**good, "format_version": 99}, "format_version 99"),
        ({**good, "colour": 1}, "unknown field 'colour'"),
    ):
        with pytest.raises(HatrefineError, match=words) as e:
            SamplingSettings.from_dict(bad, "RUN/sampling.json")
        assert str(e.value).startswith("RUN/sampling.json") and "\n" not in str(e.value)
