import json

import keras
import numpy as np
import pytest

from mtl_keras import MetaTransferModel, make_episodes, resnet12
from mtl_keras.callbacks import HardTaskLogger
from mtl_keras.data import ClassSplit, EpisodeSampler
from mtl_keras.data.hard_tasks import HardTaskPool, select_failures
from tests.conftest import make_prototype_split

WAYS, SHOTS, QUERIES, B = 4, 2, 3, 2


def _split(num_classes=8, per_class=40, **kwargs):
    split = make_prototype_split(num_classes=num_classes, per_class=per_class, **kwargs)
    # Global ids distinct from local indices, to catch any mix-up.
    split.class_ids = np.arange(num_classes) + 100
    return split


def _source(pool, split, seed=0, meta_batch_size=B):
    sampler = EpisodeSampler(split, WAYS, SHOTS, QUERIES, seed=seed)
    return sampler, pool.batch_source(sampler, meta_batch_size)


def _accuracy(batch, positions):
    """Perfect accuracy except 0 at ``positions[b]`` of task ``b`` (-1: no failure)."""
    acc = np.ones(batch["task_classes"].shape)
    for b, pos in enumerate(positions):
        if pos >= 0:
            acc[b, pos] = 0.0
    return acc


def _rotating(i, batch):
    n_tasks, ways = batch["task_classes"].shape
    return [(i + b) % ways for b in range(n_tasks)]


def _drive(pool, batches, n, positions=_rotating):
    """Draw ``n`` meta-batches, reporting each before the next is drawn (no lag)."""
    drawn = []
    for i in range(n):
        batch = next(batches)
        pool.report(batch["task_classes"], _accuracy(batch, positions(i, batch)))
        drawn.append(batch)
    return drawn


def _reported_failures(pool):
    """``[(class id, items)]`` reported so far and not yet used: pooled or waiting for the delay."""
    state = pool.get_state()
    return state["pool"] + [f for _, failures in state["received"] for f in failures]


def _items_of_class(split, batch, task, class_id):
    pos = list(batch["task_classes"][task]).index(class_id)
    support = batch["support_items"][task, pos * SHOTS : (pos + 1) * SHOTS]
    query = batch["query_items"][task, pos * QUERIES : (pos + 1) * QUERIES]
    return set(support) | set(query)


# ----------------------------------------------------------------- failure classes
def test_failure_class_is_the_lowest_accuracy_class_and_ties_go_to_the_lowest_position():
    acc = np.array([[0.8, 0.2, 0.5, 0.9], [0.5, 0.4, 0.4, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(select_failures(acc), [1, 1, 0, -1])


def test_report_pools_the_failure_class_as_global_id_with_the_images_its_task_used():
    split = _split()
    pool = HardTaskPool(delay=0)
    _, batches = _source(pool, split)
    batch = next(batches)
    pool.report(batch["task_classes"], _accuracy(batch, [2, 0]))
    next(batches)  # the report enters the pool at the next draw
    failing = [int(batch["task_classes"][0, 2]), int(batch["task_classes"][1, 0])]
    assert set(pool.pooled_classes()) == set(failing)
    assert all(c >= 100 for c in failing)
    pooled = pool.get_state()["pool"]
    assert [c for c, _ in pooled] == failing
    for task, (class_id, items) in enumerate(pooled):
        assert set(items) == _items_of_class(split, batch, task, class_id)
        np.testing.assert_array_equal(split.class_ids[split.labels[items]], class_id)


def test_perfectly_classified_tasks_report_no_failure_class():
    pool = HardTaskPool(delay=0)
    _, batches = _source(pool, _split())
    _drive(pool, batches, 3, positions=lambda i, batch: [-1] * len(batch["task_classes"]))
    next(batches)
    assert pool.pooled_classes() == {}
    assert pool.failure_counts() == {}
    assert pool.stats()["tasks_reported"] == 3 * B


# ----------------------------------------------------------------- feedback lag
def test_reports_are_matched_to_drawn_batches_in_fifo_order():
    split = _split()
    pool = HardTaskPool(delay=0)
    _, batches = _source(pool, split)
    drawn = [next(batches) for _ in range(3)]  # three batches in flight, as under prefetch
    assert pool.in_flight == 3
    for batch in drawn:
        pool.report(batch["task_classes"], _accuracy(batch, [1, 3]))
    assert pool.in_flight == 0
    next(batches)
    pooled = pool.get_state()["pool"]
    assert len(pooled) == 3 * B
    for k, (class_id, items) in enumerate(pooled):
        batch, task = drawn[k // B], k % B
        assert class_id == batch["task_classes"][task, [1, 3][task]]
        assert set(items) == _items_of_class(split, batch, task, class_id)
    stats = pool.stats()
    assert stats["orphans"] == stats["unmatched_reports"] == 0
    assert stats["max_in_flight"] == 3


def test_batches_that_never_got_a_report_are_skipped_as_orphans():
    pool = HardTaskPool(delay=0)
    _, batches = _source(pool, _split())
    first, second = next(batches), next(batches)
    pool.report(second["task_classes"], _accuracy(second, [0, 0]))
    assert pool.stats()["orphans"] == 1 and pool.in_flight == 0
    # A report matching nothing drawn still pools its failures (without image exclusion).
    pool.report(first["task_classes"], _accuracy(first, [0, 0]))
    next(batches)
    assert pool.stats()["unmatched_reports"] == 1
    assert sum(len(items) == 0 for _, items in pool.get_state()["pool"]) == B


def test_failures_enter_the_pool_when_batch_s_plus_delay_is_drawn():
    pool = HardTaskPool(delay=2)
    _, batches = _source(pool, _split())
    drawn = [next(batches)]  # serial 0
    pool.report(drawn[0]["task_classes"], _accuracy(drawn[0], [0, 0]))
    drawn.append(next(batches))  # serial 1: too early
    assert pool.pooled_classes() == {}
    drawn.append(next(batches))  # serial 2 = 0 + delay
    assert sum(pool.pooled_classes().values()) == B
    assert pool.stats()["late_reports"] == 0
    drawn.append(next(batches))  # serial 3 = 1 + delay, drawn before the report on serial 1 came
    pool.report(drawn[1]["task_classes"], _accuracy(drawn[1], [0, 0]))
    assert pool.stats()["late_reports"] == 1
    next(batches)  # a late report still counts, one draw late
    assert sum(pool.pooled_classes().values()) == 2 * B


# ----------------------------------------------------------------- schedules
def test_periodic_schedule_emits_hard_batches_after_every_normal_ones_then_clears_the_pool():
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=0, seed=0)
    _, batches = _source(pool, _split())
    flags = [batch["is_hard"] for batch in _drive(pool, batches, 15)]
    kinds = "".join("H" if f.all() else "N" if not f.any() else "?" for f in flags)
    assert kinds == "NNNHHNNNHHNNNHH"
    # Reports on hard tasks are not pooled, and the round's pool was cleared: empty now.
    next(batches)
    assert pool.pooled_classes() == {}
    assert pool.stats()["hard_rounds"] == 3


def test_periodic_schedule_waits_until_the_pool_holds_ways_classes():
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=0, seed=0)
    _, batches = _source(pool, _split())
    kinds, normal_run = [], 0
    # Perfect tasks for 5 batches (no failures), then failures in every task.
    for i in range(20):
        batch = next(batches)
        kinds.append("H" if batch["is_hard"].all() else "N")
        if kinds[-1] == "N":
            if normal_run >= 3:
                # A round is due: it may only wait while the pool lacks classes.
                assert len(pool.pooled_classes()) < WAYS
            normal_run += 1
        else:
            normal_run = 0
        positions = [-1] * B if i < 5 else _rotating(i, batch)
        pool.report(batch["task_classes"], _accuracy(batch, positions))
    first_hard = kinds.index("H")
    assert first_hard >= 7  # two batches of failures are needed for 4 classes at best
    assert kinds[first_hard : first_hard + 2] == ["H", "H"]


def test_hard_tasks_use_only_pool_classes_and_fresh_images():
    split = _split()
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=0, seed=3)
    _, batches = _source(pool, split)
    _drive(pool, batches, 3)
    snapshot = _reported_failures(pool)  # what the coming round draws from
    used = {}
    for class_id, items in snapshot:
        used.setdefault(class_id, set()).update(items)
    hard = [next(batches) for _ in range(2)]
    for batch in hard:
        assert batch["is_hard"].all()
        for task in range(B):
            classes = batch["task_classes"][task]
            assert len(set(classes)) == WAYS
            assert set(classes) <= set(used)
            for class_id in classes:
                items = _items_of_class(split, batch, task, int(class_id))
                assert not items & used[int(class_id)], f"class {class_id} reuses a failed image"
                np.testing.assert_array_equal(split.class_ids[split.labels[list(items)]], class_id)


def test_uniform_weighting_also_draws_only_pool_classes():
    pool = HardTaskPool(every=2, hard_batches=3, delay=0, weighting="uniform", seed=1)
    _, batches = _source(pool, _split())
    rounds = 0
    for i in range(20):
        classes = {c for c, _ in _reported_failures(pool)}
        batch = next(batches)
        pool.report(batch["task_classes"], _accuracy(batch, _rotating(i, batch)))
        if batch["is_hard"].all():
            rounds += 1
            assert set(batch["task_classes"].ravel()) <= classes
            for batch in _drive(pool, batches, 2):  # the round's other batches: same classes
                assert batch["is_hard"].all() and set(batch["task_classes"].ravel()) <= classes
    assert rounds >= 2


def test_mixed_schedule_carries_the_hard_fraction_of_each_meta_batch():
    pool = HardTaskPool(schedule="mixed", hard_fraction=0.25, delay=0, seed=0)
    _, batches = _source(pool, _split(), meta_batch_size=4)
    drawn = _drive(pool, batches, 12)
    counts = [int(b["is_hard"].sum()) for b in drawn]
    start = counts.index(1)
    assert counts[0] == 0 and start <= 3
    assert counts[start:] == [1] * (12 - start)
    assert all(b["is_hard"][0] for b in drawn[start:])  # hard tasks come first


def test_mixed_schedule_pool_is_a_sliding_window_of_recent_failures():
    pool = HardTaskPool(schedule="mixed", hard_fraction=0.25, window=6, delay=0, seed=0)
    _, batches = _source(pool, _split(), meta_batch_size=4)
    drawn = _drive(pool, batches, 6)
    next(batches)
    assert sum(pool.pooled_classes().values()) == 6
    # The window holds the failures of the most recent normal tasks.
    recent = [
        int(b["task_classes"][t, p])
        for i, b in enumerate(drawn)
        for t, p in enumerate(_rotating(i, b))
        if not b["is_hard"][t]
    ][-6:]
    assert [c for c, _ in pool.get_state()["pool"]] == recent


def test_periodic_pool_is_bounded_while_no_round_can_start():
    pool = HardTaskPool(schedule="periodic", every=100, window=5, delay=0)
    _, batches = _source(pool, _split())
    _drive(pool, batches, 5)
    next(batches)
    assert sum(pool.pooled_classes().values()) == 5


def test_mixed_schedule_accumulates_fractions_below_one_task():
    pool = HardTaskPool(schedule="mixed", hard_fraction=0.1, delay=0, seed=0)
    _, batches = _source(pool, _split(), meta_batch_size=4)
    counts = [int(b["is_hard"].sum()) for b in _drive(pool, batches, 30)]
    # 0.4 hard tasks a meta-batch: 2 in every 5 consecutive ones once active.
    start = counts.index(1)
    assert start <= 6
    assert all(sum(counts[i : i + 5]) == 2 for i in range(start, 26))


def test_pool_without_feedback_yields_the_plain_episode_stream():
    split = _split()
    plain = EpisodeSampler(split, WAYS, SHOTS, QUERIES, seed=5)
    pool = HardTaskPool(every=1)
    _, batches = _source(pool, split, seed=5)
    for _ in range(4):
        expected, got = plain.sample_batch(B), next(batches)
        for key in ("task_classes", "support_items", "query_items"):
            np.testing.assert_array_equal(got[key], expected[key])


# ----------------------------------------------------------------- determinism and state
def _stream(pool_seed, n=12, sampler_seed=0):
    pool = HardTaskPool(every=3, hard_batches=2, delay=1, seed=pool_seed)
    _, batches = _source(pool, _split(), seed=sampler_seed)
    return _drive(pool, batches, n)


def test_same_seed_and_reports_give_the_same_stream_and_another_seed_differs():
    a, b, c = _stream(7), _stream(7), _stream(8)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    hard = [i for i, x in enumerate(a) if x["is_hard"].any()]
    assert hard and any(not np.array_equal(a[i]["task_classes"], c[i]["task_classes"]) for i in hard)


def test_state_round_trips_through_json_and_resumes_the_same_stream():
    split = _split()
    config = dict(schedule="periodic", every=3, hard_batches=2, delay=2, seed=4)
    pool = HardTaskPool(**config)
    sampler, batches = _source(pool, split)
    _drive(pool, batches, 7)  # mid-way through the schedule, reports waiting for the delay
    state = json.loads(json.dumps(pool.get_state()))
    restored = HardTaskPool(**config)
    restored.set_state(state)
    assert restored.get_state() == pool.get_state()
    sampler2 = EpisodeSampler(split, WAYS, SHOTS, QUERIES, seed=99)
    sampler2.rng.bit_generator.state = sampler.rng.bit_generator.state
    batches2 = restored.batch_source(sampler2, B)
    for x, y in zip(_drive(pool, batches, 8), _drive(restored, batches2, 8)):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert restored.stats() == pool.stats()
    with pytest.raises(ValueError, match="saved with"):
        HardTaskPool(every=4).set_state(state)


# ----------------------------------------------------------------- pipeline
def test_make_episodes_draws_exactly_num_batches_from_the_pool():
    pool = HardTaskPool()
    ds = make_episodes(_split(), WAYS, SHOTS, QUERIES, meta_batch_size=B, num_batches=3, hard_tasks=pool)
    assert len(list(ds)) == 3
    assert pool.stats()["batches_drawn"] == 3
    with pytest.raises(ValueError, match="not both"):
        make_episodes(_split(), WAYS, SHOTS, QUERIES, hard_tasks=pool, batch_source=pool.batch_source)


def test_pool_refuses_a_second_split():
    pool = HardTaskPool()
    _source(pool, _split())
    with pytest.raises(ValueError, match="one pool per training pipeline"):
        _source(pool, _split(num_classes=6))


# ----------------------------------------------------------------- with fit
def _model(ways=WAYS, **kwargs):
    backbone = resnet12((16, 16, 1), widths=(4, 8, 8, 8))
    kwargs.setdefault("inner_steps", 3)
    kwargs.setdefault("inner_lr", 0.5)
    model = MetaTransferModel(backbone, ways=ways, eval_inner_steps=3, **kwargs)
    model.compile()
    return model


def _pipeline(pool, parallel, prefetch):
    split = _split(per_class=20)
    return make_episodes(
        split, WAYS, SHOTS, QUERIES, B, hard_tasks=pool, num_parallel_calls=parallel, prefetch=prefetch
    )


def _confusable_split(num_classes=8, per_class=20, noise=10.0, seed=0):
    """Coarse binary block patterns per class; class 1 is class 0's pattern with other noise."""
    rng = np.random.default_rng(seed)
    protos = np.kron(rng.integers(0, 2, (num_classes, 4, 4, 1)), np.ones((1, 4, 4, 1))) * 255.0
    protos[1] = protos[0]
    labels = np.repeat(np.arange(num_classes), per_class)
    images = protos[labels] + rng.normal(0, noise, (len(labels), 16, 16, 1))
    return ClassSplit.from_arrays(np.clip(images, 0, 255).astype("uint8"), labels, name="train")


def test_fit_reports_failures_on_two_near_identical_classes_far_above_their_share():
    split = _confusable_split()
    pool = HardTaskPool(schedule="periodic", every=4, hard_batches=2, seed=0)
    ds = make_episodes(split, 5, 3, 5, meta_batch_size=4, hard_tasks=pool, seed=0)
    # Enough inner steps that the linear head separates the distinct classes.
    model = _model(ways=5, inner_steps=30, inner_lr=0.5)
    model.task_feedback = pool
    model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)
    counts = pool.failure_counts()
    total = sum(counts.values())
    pair = counts.get(0, 0) + counts.get(1, 0)
    assert total >= 10
    assert pair / total >= 3 * (2 / split.num_classes), counts
    assert {c for c, _, _ in pool.most_frequent(2)} == {0, 1}


def test_fit_with_hard_tasks_keeps_feedback_lag_bounded_and_logs_hard_tasks(capsys):
    prefetch, parallel = 2, 1
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=4, seed=0)
    ds = _pipeline(pool, parallel, prefetch)
    model = _model()
    model.task_feedback = pool
    history = model.fit(ds, steps_per_epoch=10, epochs=2, verbose=0, callbacks=[HardTaskLogger(pool)])
    stats = pool.stats()
    assert stats["tasks_reported"] == 2 * 10 * B
    assert stats["max_in_flight"] <= prefetch + parallel + 1
    assert stats["late_reports"] == stats["orphans"] == stats["unmatched_reports"] == 0
    assert history.history["hard_tasks"] == pool.hard_tasks_per_epoch
    assert sum(pool.hard_tasks_per_epoch) == stats["hard_tasks_reported"] > 0
    out = capsys.readouterr().out
    assert "hard tasks; top-5 failure classes:" in out
    assert all(name == str(cid - 100) for cid, name, _ in pool.most_frequent(5))


def test_fit_stream_does_not_depend_on_pipeline_parallelism():
    def trained_stream(parallel, prefetch):
        keras.utils.set_random_seed(1234)
        pool = HardTaskPool(every=3, hard_batches=2, delay=5, seed=0)
        seen = []

        class Tee:
            def report(self, task_classes, class_accuracy):
                seen.append(task_classes.copy())
                pool.report(task_classes, class_accuracy)

        ds = _pipeline(pool, parallel, prefetch)
        model = _model()
        model.task_feedback = Tee()
        model.fit(ds, steps_per_epoch=16, epochs=1, verbose=0)
        assert pool.stats()["late_reports"] == 0
        return np.stack(seen), pool.stats()["hard_tasks_reported"]

    (a, hard_a), (b, hard_b) = trained_stream(1, None), trained_stream(2, 2)
    assert hard_a == hard_b > 0
    np.testing.assert_array_equal(a, b)


def test_hard_task_mining_attaches_the_pool_and_keeps_two_fits_in_step(capsys):
    """`HardTaskMining(episodes)` alone: the model reports to the pool during fit (not after),
    the epochs log, and a second fit on the same dataset continues where training stopped —
    every report matches the meta-batch it came from, although the first fit's iterator
    prefetched meta-batches that were never trained."""
    from mtl_keras.callbacks import HardTaskMining

    prefetch, parallel = 2, 1
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=4, seed=0)
    ds = _pipeline(pool, parallel, prefetch)
    model = _model()
    mining = HardTaskMining(ds, top_k=2)
    first = model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0, callbacks=[mining])
    assert model.task_feedback is None
    second = model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0, callbacks=[mining])
    stats = pool.stats()
    assert ds.episode_stream.trained == 10
    assert stats["tasks_reported"] == 10 * B
    assert stats["late_reports"] == stats["orphans"] == stats["unmatched_reports"] == 0, stats
    assert first.history["hard_tasks"] + second.history["hard_tasks"] == pool.hard_tasks_per_epoch
    assert "hard tasks; top-2 failure classes:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="hard_tasks=pool"):
        HardTaskMining(make_episodes(_split(), WAYS, SHOTS, QUERIES, B))


def test_without_stream_tracking_a_second_fit_mismatches_reports():
    """What `HardTaskMining` prevents (so the test above can fail): wiring only
    ``model.task_feedback``, the second fit's reports meet the first fit's prefetched,
    never-trained meta-batches."""
    pool = HardTaskPool(schedule="periodic", every=3, hard_batches=2, delay=4, seed=0)
    ds = _pipeline(pool, 1, 2)
    model = _model()
    model.task_feedback = pool
    for _ in range(2):
        model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)
    stats = pool.stats()
    assert stats["late_reports"] + stats["orphans"] + stats["unmatched_reports"] > 0, stats
