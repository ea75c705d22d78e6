import numpy as np
import torch

from rlcontrol.normalization import RunningNormalizer


def test_running_statistics_match_numpy_over_mixed_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 4.0], size=(1000, 3))
    norm = RunningNormalizer(3)
    norm.update(torch.from_numpy(data[0]))  # single observations and batches both work
    for chunk in np.array_split(data[1:], 7):
        norm.update(torch.from_numpy(chunk))
    assert np.allclose(norm.mean.numpy(), data.mean(0), atol=1e-10)
    assert np.allclose(norm.var.numpy(), data.var(0), atol=1e-10)
    x = torch.tensor([[1.0, -3.0, 10.0 + 4.0 * 50]], dtype=torch.float32)
    out = norm(x)[0]
    assert abs(out[0].item() - (1.0 - data[:, 0].mean()) / data[:, 0].std()) < 1e-4
    assert out[2].item() == 10.0  # clipped at +-10 standard deviations


def test_disabled_is_identity_and_state_round_trips():
    off = RunningNormalizer(2, enabled=False)
    x = torch.randn(4, 2)
    off.update(x * 100)
    assert torch.equal(off(x), x)
    on = RunningNormalizer(2)
    on.update(torch.randn(50, 2) * 3 + 1)
    copy = RunningNormalizer(2)
    copy.load_state_dict(on.state_dict())
    assert torch.equal(copy(x), on(x))
