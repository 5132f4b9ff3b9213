import torch

from neumeta_dist.training.ema import EMA


def test_ema_decay_warms_up_so_short_runs_are_not_stuck_at_their_start():
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.995)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # decay min(0.995, 2/11)
    assert abs(ema.shadow["weight"].item() - 9 / 11) < 1e-6
    for _ in range(59):
        ema.update(m)
    assert ema.shadow["weight"].item() > 0.99  # a fixed 0.995 would give 1 - 0.995**60 ≈ 0.26


def test_ema_state_round_trips_with_its_update_count():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, 0.9)
    for _ in range(3):
        ema.update(m)
    other = EMA(m, 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.updates == 3
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
