"""GC is never silently off under an engine it cannot read: DeepSpeed's flat partitions
(simulated: DeepSpeed is not installed here) and FSDP-flattened tensors without their layout."""
import copy

import pytest
import torch

import mmgc

from tests.test_registry import OPTIMIZERS as GC_OPTIMIZERS

OPTIMIZERS = {**GC_OPTIMIZERS, 'GCOptimWrapper': dict(lr=0.1)}


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))


def build(name: str, params):
    """The GC optimizer ``name``, or ``GCOptimWrapper`` over torch's SGD; and its step."""
    if name == 'GCOptimWrapper':
        wrapper = mmgc.GCOptimWrapper(optimizer=torch.optim.SGD(params, **OPTIMIZERS[name]))
        return wrapper.optimizer, wrapper.step
    optimizer = getattr(mmgc, name)(params, **OPTIMIZERS[name])
    return optimizer, optimizer.step


def deepspeed_partition(optimizer: torch.optim.Optimizer, group: int = 0) -> torch.Tensor:
    """What DeepSpeed's ZeRO does to a client optimizer: the group's params replaced by one flat
    fp32 tensor holding them end to end, with a flat gradient."""
    params = optimizer.param_groups[group]['params']
    flat = torch.cat([p.detach().flatten() for p in params]).requires_grad_()
    flat.grad = torch.randn_like(flat)
    optimizer.param_groups[group]['params'] = [flat]
    return flat


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_deepspeed_partitions_are_refused_at_the_first_step(name):
    """One RuntimeError naming DeepSpeed and what to use instead; the partition is not stepped."""
    optimizer, step = build(name, model().parameters())
    flat = deepspeed_partition(optimizer)
    before = flat.detach().clone()
    with pytest.raises(RuntimeError, match=r"param group 0 was built with 2 conv / fc weights.*"
                       r"DeepSpeed.*FSDPStrategy.*fully_shard.*ZeroRedundancyOptimizer"):
        step()
    assert torch.equal(flat.detach(), before)


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_flat_groups_gc_has_nothing_to_do_in_are_stepped(name):
    """A group built without conv / fc weights (biases), or with use_gc=False, may be flattened:
    GC would not centralize it anyway, so the step goes on."""
    net = model()
    biases = [p for p in net.parameters() if p.dim() == 1]
    weights = [p for p in net.parameters() if p.dim() > 1]
    optimizer, step = build(name, [dict(params=biases), dict(params=weights, use_gc=False)])
    flats = [deepspeed_partition(optimizer, group) for group in (0, 1)]
    before = [flat.detach().clone() for flat in flats]
    step()
    assert all(not torch.equal(f.detach(), b) for f, b in zip(flats, before))


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_reloaded_and_copied_optimizers_are_not_refused(name):
    """load_state_dict keeps each group's params (no false alarm); a deep copy steps too."""
    net = model()
    optimizer, step = build(name, net.parameters())
    net(torch.randn(2, 3, 3, 3)).sum().backward()
    step()
    optimizer.load_state_dict(optimizer.state_dict())
    step()
    copied = copy.deepcopy(optimizer)
    copied.step()


def test_fsdp_flattened_tensor_without_its_layout_is_refused():
    """A parameter FSDP marked as flattened whose FlatParamHandle cannot be found: one
    RuntimeError at the step, nothing stepped."""
    flat = torch.nn.Parameter(torch.randn(12))
    flat._fsdp_flattened = True
    flat.grad = torch.randn(12)
    before = flat.detach().clone()
    optimizer = mmgc.SGDGC([flat], lr=0.1)
    with pytest.raises(RuntimeError, match='flattened by FSDP.*FlatParamHandle could not be '
                       'found.*Refusing to step without GC'):
        optimizer.step()
    assert torch.equal(flat.detach(), before)
