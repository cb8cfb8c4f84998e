import random

import numpy as np
import pytest
import torch

from course_lib import data, search

TINY = search.SearchSpace(resolutions=(8, 12), depths=(1, 2), kernels=(3, 5), expands=(1, 2), stem_channels=4,
                          stage_channels=(4, 8))


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = search.SuperNet(TINY)
    # non-trivial BatchNorm statistics, so that slicing them wrongly would show
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def configs():
    rng = random.Random(3)
    return [TINY.largest(), TINY.smallest()] + [TINY.sample(rng) for _ in range(6)]


@pytest.mark.parametrize("config", configs())
def test_extracted_subnet_computes_what_the_supernet_computes(supernet, config):
    subnet = search.extract_subnet(supernet, config)
    x = torch.rand(3, 1, config["resolution"], config["resolution"])
    with torch.no_grad():
        assert torch.allclose(subnet(x), supernet(x, config), atol=1e-6)
    blocks = [m for m in subnet if isinstance(m, search.MBConv)]
    assert len(blocks) == sum(config["depths"])
    assert subnet.resolution == config["resolution"]


def test_extracted_subnet_owns_its_weights(supernet):
    config = TINY.smallest()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    subnet = search.extract_subnet(supernet, config)
    with torch.no_grad():
        for p in subnet.parameters():
            p.add_(1.0)
    search.calibrate_bn(subnet, torch.rand(16, 1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())


def test_smaller_choices_make_smaller_networks(supernet):
    sizes = [sum(p.numel() for p in search.extract_subnet(supernet, c).parameters()) for c in (TINY.smallest(), TINY.largest())]
    assert sizes[0] < sizes[1]


def test_calibrate_bn_sets_statistics_of_the_data_and_keeps_weights(supernet):
    subnet = search.extract_subnet(supernet, TINY.largest())
    weights = [p.clone() for p in subnet.parameters()]
    images = torch.rand(64, 1, 12, 12) * 3 + 1
    search.calibrate_bn(subnet, images, batch_size=64)
    first_bn = subnet[0][1]
    with torch.no_grad():
        pre = subnet[0][0](images)  # the stem convolution's output: what the first BatchNorm saw
    assert torch.allclose(first_bn.running_mean, pre.mean((0, 2, 3)), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights, subnet.parameters()))
    assert not subnet.training
    with pytest.raises(ValueError, match="N × C × H × W"):
        search.calibrate_bn(subnet, torch.rand(3, 12))


def test_space_validation_names_the_bad_entry():
    config = TINY.largest()
    assert TINY.validate(config) is config
    with pytest.raises(ValueError, match="kernels.*7"):
        TINY.validate({**config, "kernels": [7] * TINY.num_slots})
    with pytest.raises(ValueError, match="depths.*needs 2 entries"):
        TINY.validate({**config, "depths": [1]})
    with pytest.raises(ValueError, match="keys"):
        TINY.validate({"resolution": 8})
    with pytest.raises(ValueError, match="odd"):
        search.SearchSpace(kernels=(3, 4))


def test_sample_mutate_crossover_stay_in_the_space():
    rng = random.Random(0)
    for _ in range(50):
        a, b = TINY.sample(rng), TINY.sample(rng)
        TINY.validate(TINY.mutate(a, rng, prob=0.5))
        TINY.validate(TINY.crossover(a, b, rng))
    assert TINY.mutate(a, rng, prob=0.0) == a
    assert search.SearchSpace().sample(random.Random(7)) == search.SearchSpace().sample(random.Random(7))


def test_active_blocks_and_layer_keys():
    config = {"resolution": 12, "depths": [2, 1], "kernels": [5, 3, 3, 5], "expands": [2, 1, 2, 2]}
    specs = search.active_blocks(config, TINY)
    assert [(b.slot, b.stride, b.side_in, b.kernel) for b in specs] == [(0, 2, 12, 5), (1, 1, 6, 3), (2, 2, 6, 3)]
    assert search.layer_keys(config, TINY) == ["stem r12", "stage0 first r12 k5 e2", "stage0 rest r6 k3 e1",
                                               "stage1 first r6 k3 e2", "head r3"]
    # an inactive slot (index 3) does not change the network
    other = {**config, "kernels": [5, 3, 3, 3]}
    assert search.config_key(config, TINY) == search.config_key(other, TINY)
    assert set(search.layer_keys(config, TINY)) <= set(search.all_layer_keys(TINY))


def test_latency_predictor_sums_the_table():
    keys = search.all_layer_keys(TINY)
    table = search.LatencyTable({k: 0.01 * (i + 1) for i, k in enumerate(keys)}, call_ms=0.5, threads=1, space=TINY)
    config = TINY.sample(random.Random(1))
    expected = 0.5 + sum(table.entries[k] for k in search.layer_keys(config, TINY))
    assert table.predict(config) == pytest.approx(expected)
    assert table.predict(TINY.largest()) > table.predict(TINY.smallest())
    del table.entries["stem r8"]
    with pytest.raises(KeyError, match="stem r8"):
        table.predict(TINY.smallest())


def test_measured_latency_table_covers_the_space():
    space = search.SearchSpace(resolutions=(8,), depths=(1, 2), kernels=(3,), expands=(1,), stem_channels=4,
                               stage_channels=(4,))
    table = search.measure_latency_table(space, rounds=1, repeats=3, warmup=1)
    assert set(table.entries) == set(search.all_layer_keys(space))
    assert table.call_ms > 0 and all(v >= 0 for v in table.entries.values())
    assert table.threads == 1
    assert table.predict(space.largest()) >= table.predict(space.smallest())


def _toy_latency(config):
    return 0.1 + sum(b.kernel * b.expand for b in search.active_blocks(config, TINY)) / 10


def _toy_fitness(config):
    return sum(b.kernel + b.expand for b in search.active_blocks(config, TINY)) + config["resolution"] / 100


def test_search_respects_the_budget_and_is_repeatable():
    budget = 2.0
    results = [search.evolutionary_search(TINY, _toy_fitness, _toy_latency, budget, population=8, generations=4,
                                          parents=3, seed=s) for s in (0, 0, 1)]
    assert results[0].best == results[1].best and results[0].fitness == results[1].fitness
    for r in results:
        assert _toy_latency(r.best) <= budget and r.latency_ms == _toy_latency(r.best)
        assert r.best_per_generation == sorted(r.best_per_generation)  # the elite is kept
    # the search beats random sampling under the same budget
    rng = random.Random(0)
    random_best = max(_toy_fitness(search.sample_under_budget(TINY, _toy_latency, budget, rng)) for _ in range(8))
    assert results[0].fitness >= random_best


def test_search_errors_are_clear():
    with pytest.raises(ValueError, match="raise the budget"):
        search.evolutionary_search(TINY, _toy_fitness, _toy_latency, 0.01, seed=0)
    with pytest.raises(ValueError, match="parents"):
        search.evolutionary_search(TINY, _toy_fitness, _toy_latency, 2.0, population=4, parents=4)


def test_training_runs_and_saves(tmp_path):
    split = data.synthetic(n=40, input_shape=(1, 8, 8), seed=0)
    splits = search.images_at(split, TINY.resolutions)
    assert splits[12].x_val.shape[1:] == (1, 12, 12) and splits[8] is split
    net = search.SuperNet(TINY)
    history = search.train_supernet(net, splits, epochs=2, batch_size=24, seed=0)
    assert len(history.largest_loss) == 2 and np.isfinite(history.smallest_loss).all()
    with pytest.raises(ValueError, match="resolutions"):
        search.train_supernet(net, {8: split}, epochs=1)
    path = search.save_supernet(net, tmp_path / "s.pt", epochs=2)
    loaded, meta = search.load_supernet(path)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x, TINY.largest()), net.eval()(x, TINY.largest()))
    assert meta == {"epochs": 2} and loaded.space == TINY
    subnet = search.ready_subnet(loaded, TINY.smallest(), splits, calibration=20)
    assert search.correct_predictions(subnet, splits[8], "val").shape == (len(split.y_val),)
    with pytest.raises(FileNotFoundError, match="course_lib supernet"):
        search.load_supernet(tmp_path / "missing.pt")


def test_accuracy_difference_and_verdict():
    a = np.array([1] * 95 + [0] * 5, dtype=bool)
    b = np.array([1] * 60 + [0] * 40, dtype=bool)
    diff, low, high = search.accuracy_difference(a, b)
    assert diff == pytest.approx(0.35) and low < diff < high and low > 0
    assert search.verdict(low, high) == "A better"
    assert search.verdict(*search.accuracy_difference(b, a)[1:]) == "B better"
    assert search.verdict(*search.accuracy_difference(a, a[::-1])[1:]) == "no measurable difference"
    with pytest.raises(ValueError, match="same length"):
        search.accuracy_difference(a, b[:10])


def test_search_accepts_a_tuple_fitness_compared_in_order():
    # first element coarse (many ties), second breaks them: the search must use both
    def coarse(config):
        return round(_toy_fitness(config) / 10), _toy_fitness(config)

    result = search.evolutionary_search(TINY, coarse, _toy_latency, 2.0, population=8, generations=4, parents=3, seed=0)
    plain = search.evolutionary_search(TINY, _toy_fitness, _toy_latency, 2.0, population=8, generations=4, parents=3, seed=0)
    assert result.fitness[1] == plain.fitness and _toy_latency(result.best) <= 2.0


def test_random_search_is_the_equal_budget_baseline():
    budget = 2.0
    result = search.random_search(TINY, _toy_fitness, _toy_latency, budget, evaluations=6, seed=0)
    assert result.evaluated == 6 and len(result.best_per_generation) == 6
    assert result.latency_ms <= budget and result.fitness == max(result.best_per_generation)
    assert list(result.best_per_generation) == sorted(result.best_per_generation)  # best so far never falls
    assert search.random_search(TINY, _toy_fitness, _toy_latency, budget, evaluations=6, seed=0).best == result.best
    with pytest.raises(ValueError, match="evaluations"):
        search.random_search(TINY, _toy_fitness, _toy_latency, budget, evaluations=0)
