"""One optimizer step: accumulation equals the full batch, clipping, and the non-finite guard."""
import copy

import pytest
import torch
from torch import nn

from spark.engine.precision import Precision
from spark.engine.step import NonFiniteError, train_step


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def mse(model: nn.Module):
    return lambda batch: (model(batch[0]).squeeze(1) - batch[1]).square().mean()


def test_accumulated_micro_batches_match_one_full_batch():
    x, y = torch.randn(12, 4), torch.randn(12)
    results, weights = [], []
    for micro in (None, 4, 5):  # 5 splits unevenly: 5 + 5 + 2
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        results.append(train_step(mse(model), optimizer, (x, y), module=model, where="test", micro_batch=micro))
        weights.append([p.detach().clone() for p in model.parameters()])
    for result, params in zip(results[1:], weights[1:]):
        assert result.loss == pytest.approx(results[0].loss, rel=1e-6)
        assert result.grad_norm == pytest.approx(results[0].grad_norm, rel=1e-5)
        for p, q in zip(params, weights[0]):
            torch.testing.assert_close(p, q)


def test_clipping_reports_the_norm_before_clipping():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(8, 4), 100 * torch.randn(8)
    result = train_step(mse(model), optimizer, (x, y), module=model, where="test", clip=1.0)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert result.grad_norm > 1.0
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)


def test_non_finite_loss_stops_before_the_update():
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.full((8,), float("nan"))
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 3/10, iteration 7/50"):
        train_step(mse(model), optimizer, (x, y), module=model, where="epoch 3/10, iteration 7/50")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_bf16_autocast_runs_on_cpu():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    def loss_fn(batch):
        out = model(batch[0])
        seen.append(out.dtype)
        return (out.float().squeeze(1) - batch[1]).square().mean()
    result = train_step(loss_fn, optimizer, (torch.randn(4, 4), torch.randn(4)), module=model, where="test",
                        precision=Precision("bf16"))
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.loss > 0
