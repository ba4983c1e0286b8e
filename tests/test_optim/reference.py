"""Plain per-tensor GC optimizers written from GC_SPEC's table, in float64, for the tests."""
import math
from typing import Dict, List

import torch

from ..test_gc import reference_phi


class ReferenceOptimizer:
    """One reference for SGDGC, SGDWGC, AdamGC, AdamWGC and AdagradGC."""

    def __init__(self, name: str, params: List[torch.Tensor], use_gc: bool = True,
                 gc_conv_only: bool = False, gc_loc: str = 'grad', **hyper) -> None:
        self.name, self.params = name, params
        self.use_gc, self.conv_only, self.gc_loc = use_gc, gc_conv_only, gc_loc
        self.h = hyper
        self.state: List[Dict] = [{} for _ in params]

    def phi(self, t: torch.Tensor) -> torch.Tensor:
        return reference_phi(t, self.conv_only) if self.use_gc else t

    def step(self, grads: List[torch.Tensor]) -> None:
        for i, (w, g) in enumerate(zip(self.params, grads)):
            if self.h.get('maximize', False):
                g = -g
            new = getattr(self, self.name)(w.clone(), g.clone(), self.state[i])
            w.copy_(new)

    def SGDGC(self, w, g, state):
        lr, wd = self.h['lr'], self.h.get('weight_decay', 0)
        d = self.phi(g + wd * w)
        return w - lr * self._momentum(d, state)

    def SGDWGC(self, w, g, state):
        lr, wd = self.h['lr'], self.h.get('weight_decay', 0)
        d = self._momentum(self.phi(g), state)
        return w - lr * d - lr * wd * w

    def _momentum(self, d, state):
        mom, damp = self.h.get('momentum', 0), self.h.get('dampening', 0)
        if mom == 0:
            return d
        if 'buf' not in state:
            state['buf'] = d.clone()
        else:
            state['buf'] = mom * state['buf'] + (1 - damp) * d
        return d + mom * state['buf'] if self.h.get('nesterov', False) else state['buf']

    def _adam_direction(self, g, state):
        b1, b2 = self.h.get('betas', (0.9, 0.999))
        eps = self.h.get('eps', 1e-8)
        state['t'] = t = state.get('t', 0) + 1
        state['m'] = b1 * state.get('m', torch.zeros_like(g)) + (1 - b1) * g
        state['v'] = b2 * state.get('v', torch.zeros_like(g)) + (1 - b2) * g * g
        v = state['v']
        if self.h.get('amsgrad', False):
            state['vmax'] = v = torch.maximum(state.get('vmax', torch.zeros_like(g)), v)
        m_hat = state['m'] / (1 - b1**t)
        return m_hat / (v.sqrt() / math.sqrt(1 - b2**t) + eps)

    def AdamGC(self, w, g, state):
        lr, wd = self.h['lr'], self.h.get('weight_decay', 0)
        g = g + wd * w
        if self.gc_loc == 'grad':
            return w - lr * self._adam_direction(self.phi(g), state)
        return w - lr * self.phi(self._adam_direction(g, state))

    def AdamWGC(self, w, g, state):
        lr, wd = self.h['lr'], self.h.get('weight_decay', 1e-2)
        if self.gc_loc == 'grad':
            return w * (1 - lr * wd) - lr * self._adam_direction(self.phi(g), state)
        return w - lr * self.phi(self._adam_direction(g, state) + wd * w)

    def AdagradGC(self, w, g, state):
        lr, wd = self.h['lr'], self.h.get('weight_decay', 0)
        lr_decay, eps = self.h.get('lr_decay', 0), self.h.get('eps', 1e-10)
        g = g + wd * w
        if self.gc_loc == 'grad':
            g = self.phi(g)
        state['t'] = t = state.get('t', 0) + 1
        state['sum'] = state.get('sum', torch.full_like(
            g, self.h.get('initial_accumulator_value', 0.0))) + g * g
        clr = lr / (1 + (t - 1) * lr_decay)
        u = g / (state['sum'].sqrt() + eps)
        return w - clr * (self.phi(u) if self.gc_loc == 'update' else u)
