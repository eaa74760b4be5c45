"""WeightAveraging: the mean (or EMA) of the weights after a given step, copied into the network."""

import torch
from ignite.engine import Engine

from cet_monai.engines import WeightAveraging


def _run(net, handler, iterations, resume_state=None):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = []

    def step(engine, _):
        opt.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
        seen.append(net.weight.detach().clone())

    engine = Engine(step)
    handler.attach(engine)
    engine.run(range(iterations), max_epochs=1)
    return seen


def test_plain_mean_of_the_steps_after_start():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    handler = WeightAveraging(net, start_iteration=3)
    seen = _run(net, handler, 8)
    assert handler.count == 5
    torch.testing.assert_close(net.weight.detach(), torch.stack(seen[3:]).mean(0))


def test_off_when_the_start_is_the_budget():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    seen = _run(net, WeightAveraging(net, start_iteration=8), 8)
    torch.testing.assert_close(net.weight.detach(), seen[-1])


def test_ema_and_state_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    handler = WeightAveraging(net, start_iteration=0, decay=0.5)
    seen = _run(net, handler, 3)
    ema = seen[0]
    for w in seen[1:]:
        ema = 0.5 * ema + 0.5 * w
    torch.testing.assert_close(net.weight.detach(), ema)
    other = WeightAveraging(torch.nn.Linear(2, 1), start_iteration=0, decay=0.5)
    other.load_state_dict(handler.state_dict())
    assert other.count == 3
