import torch

from rlcontrol.optim import FusedAdam, clip_grad_norm


def test_fused_adam_matches_torch_adam_and_round_trips():
    torch.manual_seed(0)
    ours_params = [torch.randn(5, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    ref_params = [p.detach().clone().requires_grad_(True) for p in ours_params]
    ours = FusedAdam(ours_params, lr=1e-2)
    ref = torch.optim.Adam(ref_params, lr=1e-2)
    for i in range(20):
        grads = [torch.randn_like(p) for p in ours_params]
        ours.step(grads)
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        ref.step()
        if i == 9:  # reload mid-way from a weights_only-safe state dict
            state = ours.state_dict()
            ours = FusedAdam(ours_params, lr=1e-2)
            ours.load_state_dict(state)
    for a, b in zip(ours_params, ref_params):
        assert torch.allclose(a, b, atol=1e-6)


def test_clip_grad_norm():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]  # norm 5
    norm = clip_grad_norm(grads, 1.0)
    assert abs(norm.item() - 5.0) < 1e-6
    assert torch.allclose(torch.cat(grads), torch.tensor([0.6, 0.0, 0.8]), atol=1e-5)
    small = [torch.tensor([0.3, 0.4])]
    clip_grad_norm(small, 1.0)
    assert torch.allclose(small[0], torch.tensor([0.3, 0.4]))
