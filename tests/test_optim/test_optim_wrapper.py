"""GCOptimWrapper and AmpGCOptimWrapper: GC for any optimizer, in mmengine's step order."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper

from mmgc import SGDGC, AmpGCOptimWrapper, GCOptimWrapper

from ..test_gc import reference_phi, slice_means


class TinyNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def make_net(seed=0):
    torch.manual_seed(seed)
    return TinyNet().double()


def inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)


def loss_of(net, seed=1):
    return (net(inputs(seed)) + 0.5).pow(2).sum()


def weights(net):
    return [net.conv.weight, net.fc.weight]


def test_grad_mode_centralizes_gradients_before_the_inner_step():
    net, twin = make_net(), make_net()
    wrapper = GCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    for p, t in zip(net.parameters(), twin.parameters()):
        expected = t.detach() - 0.1 * reference_phi(t.grad)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


def test_grad_mode_with_l2_decay_is_phi_g_plus_decay():
    """Documented difference from SGDGC: Phi(g) + wd * w, not Phi(g + wd * w)."""
    net, twin = make_net(), make_net()
    wrapper = GCOptimWrapper(
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=0.5))
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    for p, t in zip(weights(net), weights(twin)):
        d = reference_phi(t.grad) + 0.5 * t.detach()
        torch.testing.assert_close(p.detach(), t.detach() - 0.1 * d, rtol=1e-12, atol=1e-12)


def test_value_clipping_happens_before_gc():
    net, twin = make_net(), make_net()
    wrapper = GCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
                             clip_grad=dict(type='value', clip_value=0.05))
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    for p, t in zip(weights(net), weights(twin)):
        applied = t.detach() - p.detach()
        torch.testing.assert_close(applied, reference_phi(t.grad.clamp(-0.05, 0.05)),
                                   rtol=1e-12, atol=1e-12)
        assert slice_means(applied).abs().max() < 1e-14  # clip after GC would break this


def test_gc_optimizer_under_plain_optim_wrapper_sees_clipped_gradients():
    net, twin = make_net(), make_net()
    wrapper = OptimWrapper(optimizer=SGDGC(net.parameters(), lr=1.0),
                           clip_grad=dict(type='value', clip_value=0.05))
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    for p, t in zip(weights(net), weights(twin)):
        torch.testing.assert_close(t.detach() - p.detach(),
                                   reference_phi(t.grad.clamp(-0.05, 0.05)),
                                   rtol=1e-12, atol=1e-12)


def test_gradient_accumulation_centralizes_the_summed_gradient_once():
    net, twin = make_net(), make_net()
    wrapper = GCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                             accumulative_counts=2)
    wrapper.initialize_count_status(net, 0, 2)
    wrapper.update_params(loss_of(net, 1))
    assert all(torch.equal(p, t) for p, t in zip(net.parameters(), twin.parameters()))
    wrapper.update_params(loss_of(net, 2))
    ((loss_of(twin, 1) + loss_of(twin, 2)) / 2).backward()
    for p, t in zip(net.parameters(), twin.parameters()):
        expected = t.detach() - 0.1 * reference_phi(t.grad)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('optimizer', [
    lambda params: torch.optim.RMSprop(params, lr=1e-2, weight_decay=1e-2, momentum=0.5),
    lambda params: torch.optim.Adamax(params, lr=1e-2, weight_decay=1e-2),
    lambda params: torch.optim.NAdam(params, lr=1e-2, weight_decay=1e-2),
])
def test_update_mode_keeps_weight_vector_means_with_any_optimizer(optimizer):
    net = make_net()
    before = [slice_means(w.detach()) for w in weights(net)]
    wrapper = GCOptimWrapper(optimizer=optimizer(net.parameters()), gc_loc='update')
    for step in range(20):
        wrapper.update_params(loss_of(net, step))
    for w, w0, b in zip(weights(net), weights(make_net()), before):
        assert not torch.allclose(w, w0)
        assert (slice_means(w.detach()) - b).abs().max() < 1e-12
    assert (net.fc.bias.detach() != make_net().fc.bias.detach()).all()


def test_param_group_options_override_wrapper_defaults():
    net, twin = make_net(), make_net()
    optimizer = torch.optim.SGD([dict(params=net.conv.parameters(), use_gc=False),
                                 dict(params=net.fc.parameters())], lr=0.1)
    wrapper = GCOptimWrapper(optimizer=optimizer)
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    torch.testing.assert_close(net.conv.weight.detach(),
                               twin.conv.weight.detach() - 0.1 * twin.conv.weight.grad)
    torch.testing.assert_close(net.fc.weight.detach(),
                               twin.fc.weight.detach() - 0.1 * reference_phi(twin.fc.weight.grad))


def test_conv_only_leaves_fc_alone():
    net, twin = make_net(), make_net()
    wrapper = GCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                             gc_conv_only=True)
    wrapper.update_params(loss_of(net))
    loss_of(twin).backward()
    torch.testing.assert_close(net.fc.weight.detach(),
                               twin.fc.weight.detach() - 0.1 * twin.fc.weight.grad)
    assert slice_means(net.conv.weight.detach() - twin.conv.weight.detach()).abs().max() < 1e-14


def test_wrapping_a_gc_optimizer_is_refused():
    net = make_net()
    with pytest.raises(ValueError, match='SGDGC, which centralizes by itself'):
        GCOptimWrapper(optimizer=SGDGC(net.parameters(), lr=0.1))


def test_bad_gc_loc_is_refused():
    net = make_net()
    with pytest.raises(ValueError, match=r"GCOptimWrapper: gc_loc must be one of .* got 'x'"):
        GCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1), gc_loc='x')


@pytest.fixture
def cpu_amp_wrapper(monkeypatch):
    """AmpGCOptimWrapper on a CPU: mmengine asserts a GPU, torch has a CPU GradScaler."""

    def build(net, **kwargs):
        monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
        wrapper = AmpGCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                    **kwargs)
        wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
        return wrapper

    return build


@pytest.mark.parametrize('gc_loc', ['grad', 'update'])
def test_amp_unscales_then_centralizes(cpu_amp_wrapper, gc_loc):
    net, twin = make_net(), make_net()
    wrapper = cpu_amp_wrapper(net, gc_loc=gc_loc)
    wrapper.backward(loss_of(net))
    assert net.fc.weight.grad.abs().max() > 100 * twin.fc.weight.abs().max()  # scaled
    wrapper.step()
    loss_of(twin).backward()
    for p, t in zip(weights(net), weights(twin)):
        expected = t.detach() - 0.1 * reference_phi(t.grad)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


def test_amp_skips_the_step_on_inf_gradients(cpu_amp_wrapper):
    net = make_net()
    before = [p.detach().clone() for p in net.parameters()]
    wrapper = cpu_amp_wrapper(net, clip_grad=dict(max_norm=1.0))
    wrapper.backward(loss_of(net))
    net.conv.weight.grad[0, 0, 0, 0] = float('inf')
    wrapper.step()
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert wrapper.loss_scaler.get_scale() < 1024.0


def test_amp_needs_an_accelerator_on_this_machine():
    if torch.cuda.is_available():
        pytest.skip('this check is for machines without an accelerator')
    net = make_net()
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpGCOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
